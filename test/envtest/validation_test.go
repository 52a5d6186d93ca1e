package envtest

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// minimal is a pool with only the required fields.
func minimal(name string) *v1.WorkerPool {
	return &v1.WorkerPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.WorkerPoolSpec{
			Image: "tasker-worker:dev",
			Queue: v1.QueueSpec{
				Namespaces:        []v1.QueueName{"payments"},
				DatabaseSecretRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "url"},
			},
		},
	}
}

// A manifest with only image and queue shows the full effective
// configuration once stored: every block is defaulted, even when omitted.
func TestDefaultsOnAMinimalManifest(t *testing.T) {
	wp := minimal("defaults")
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	s := wp.Spec
	want := v1.WorkerPoolSpec{
		Replicas: ptr(int32(1)), Image: "tasker-worker:dev", ImagePullPolicy: corev1.PullIfNotPresent,
		Queue: v1.QueueSpec{Namespaces: []v1.QueueName{"payments"}, DatabaseSecretRef: s.Queue.DatabaseSecretRef,
			VisibilityTimeout: "30s", BatchSize: 10, PollInterval: "500ms"},
		Dispatch: v1.DispatchSpec{DispatchBufferSize: 1000, CompletionBufferSize: 1000, MaxConcurrentHandlers: 10,
			HandlerTimeout: "30s", CompletionSendTimeout: "10s", SaturationWarningPercent: 80, SaturationCriticalPercent: 95},
		FFI: v1.FFISpec{Enabled: false, DispatchBufferSize: 1000, CompletionTimeout: "30s", StarvationWarningThreshold: "10s",
			CallbackTimeout: "5s", CallbackStrategy: "FireAndForget"},
		Drain: v1.DrainSpec{Timeout: "60s"},
	}
	if *s.Replicas != *want.Replicas || s.ImagePullPolicy != want.ImagePullPolicy || s.Queue.VisibilityTimeout != want.Queue.VisibilityTimeout ||
		s.Queue.BatchSize != want.Queue.BatchSize || s.Queue.PollInterval != want.Queue.PollInterval ||
		s.Dispatch != want.Dispatch || s.FFI != want.FFI || s.Drain != want.Drain {
		t.Fatalf("defaults:\n got %+v\nwant %+v", s, want)
	}
}

// Every validation rule refuses a bad manifest with a message naming the field.
func TestValidationRulesNameTheField(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*v1.WorkerPool)
		want   []string
	}{
		{"no image", func(w *v1.WorkerPool) { w.Spec.Image = "" }, []string{"spec.image"}},
		{"no queue namespace", func(w *v1.WorkerPool) { w.Spec.Queue.Namespaces = nil }, []string{"spec.queue.namespaces"}},
		{"bad queue name", func(w *v1.WorkerPool) { w.Spec.Queue.Namespaces = []v1.QueueName{"Payments!"} }, []string{"spec.queue.namespaces[0]"}},
		{"buffer too small", func(w *v1.WorkerPool) { w.Spec.Dispatch.DispatchBufferSize = -1 }, []string{"spec.dispatch.dispatchBufferSize", "greater than or equal to 1"}},
		{"buffer too large", func(w *v1.WorkerPool) { w.Spec.FFI.DispatchBufferSize = 2000000 }, []string{"spec.ffi.dispatchBufferSize", "less than or equal to 1000000"}},
		{"percent over 100", func(w *v1.WorkerPool) { w.Spec.Dispatch.SaturationCriticalPercent = 101 }, []string{"spec.dispatch.saturationCriticalPercent"}},
		{"warning not below critical", func(w *v1.WorkerPool) {
			w.Spec.Dispatch.SaturationWarningPercent, w.Spec.Dispatch.SaturationCriticalPercent = 90, 90
		}, []string{"spec.dispatch", "saturationWarningPercent must be below saturationCriticalPercent"}},
		{"unparseable duration", func(w *v1.WorkerPool) { w.Spec.Dispatch.HandlerTimeout = "30 seconds" }, []string{"spec.dispatch.handlerTimeout"}},
		{"zero duration", func(w *v1.WorkerPool) { w.Spec.Drain.Timeout = "0s" }, []string{"spec.drain.timeout", "positive duration"}},
		{"starvation not below completion timeout", func(w *v1.WorkerPool) {
			w.Spec.FFI.StarvationWarningThreshold, w.Spec.FFI.CompletionTimeout = "30s", "30s"
		}, []string{"spec.ffi", "starvationWarningThreshold must be below completionTimeout"}},
		{"callback timeout zero without Blocking", func(w *v1.WorkerPool) {
			w.Spec.FFI.CallbackStrategy, w.Spec.FFI.CallbackTimeout = "BlockingWithTimeout", "0s"
		}, []string{"spec.ffi", "callbackTimeout must be a positive duration unless callbackStrategy is Blocking"}},
		{"unknown callback strategy", func(w *v1.WorkerPool) { w.Spec.FFI.CallbackStrategy = "Eventually" }, []string{"spec.ffi.callbackStrategy", "Blocking", "FireAndForget"}},
		{"name too long for its Deployment", func(w *v1.WorkerPool) { w.Name = strings.Repeat("p", 64) }, []string{"metadata.name must be at most 63 characters"}},
		{"name with a dot, which no Service may have", func(w *v1.WorkerPool) { w.Name = "payments.v2" }, []string{"metadata.name must start with a letter", "DNS-1035"}},
		{"name starting with a digit", func(w *v1.WorkerPool) { w.Name = "2payments" }, []string{"metadata.name must start with a letter"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wp := minimal("invalid-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-"))
			if len(wp.Name) > 63 {
				wp.Name = wp.Name[:63]
			}
			tc.mutate(wp)
			err := k8s.Create(ctx(t), wp)
			if err == nil {
				t.Fatal("accepted an invalid WorkerPool")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal does not mention %q:\n%v", w, err)
				}
			}
		})
	}
	// Blocking needs no callback timeout.
	ok := minimal("blocking-without-timeout")
	ok.Spec.FFI.CallbackStrategy, ok.Spec.FFI.CallbackTimeout = "Blocking", "0s"
	if err := k8s.Create(ctx(t), ok); err != nil {
		t.Fatalf("Blocking with a zero callback timeout refused: %v", err)
	}
}

// The status subresource ignores status on create, and printer columns are
// declared for kubectl get.
func TestStatusSubresourceAndPrinterColumns(t *testing.T) {
	wp := minimal("status")
	wp.Status.ReadyReplicas = 7
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	if wp.Status.ReadyReplicas != 0 {
		t.Fatalf("status written through the main resource: %+v", wp.Status)
	}
	wp.Status.ReadyReplicas, wp.Status.FFI.PendingEvents, wp.Status.FFI.OldestPendingAge = 2, 4, "2.5s"
	if err := k8s.Status().Update(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1.GroupVersion.WithKind("WorkerPool"))
	if err := k8s.Get(ctx(t), keyOf(wp), u); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedString(u.Object, "status", "ffi", "oldestPendingAge"); got != "2.5s" {
		t.Fatalf("status not stored through /status: %v", u.Object["status"])
	}
}

func ptr[T any](v T) *T { return &v }
