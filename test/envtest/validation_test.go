package envtest

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

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
		{"image in two places", func(w *v1.WorkerPool) {
			w.Spec.Template = workerTemplate(corev1.Container{Name: "worker", Image: "other:1"})
		},
			[]string{"spec.image and the image of the worker container in spec.template differ"}},
		{"no image in either place", func(w *v1.WorkerPool) {
			w.Spec.Image, w.Spec.Template = "", workerTemplate(corev1.Container{Name: "worker"})
		}, []string{"spec.image is required (or the image of the container named worker in spec.template)"}},
		{"command in two places", func(w *v1.WorkerPool) {
			w.Spec.Command, w.Spec.Template = []string{"a"}, workerTemplate(corev1.Container{Name: "worker", Command: []string{"b"}})
		}, []string{"spec.command and the command of the worker container in spec.template are both set"}},
		{"args in two places", func(w *v1.WorkerPool) {
			w.Spec.Args, w.Spec.Template = []string{"a"}, workerTemplate(corev1.Container{Name: "worker", Args: []string{"a"}})
		}, []string{"spec.args and the args of the worker container in spec.template are both set"}},
		{"resources in two places", func(w *v1.WorkerPool) {
			limits := corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}
			w.Spec.Resources = corev1.ResourceRequirements{Limits: limits}
			w.Spec.Template = workerTemplate(corev1.Container{Name: "worker", Resources: corev1.ResourceRequirements{Limits: limits}})
		}, []string{"spec.resources and the resources of the worker container in spec.template are both set"}},
		{"service account in two places", func(w *v1.WorkerPool) {
			w.Spec.ServiceAccountName, w.Spec.Template = "a", &corev1.PodTemplateSpec{Spec: corev1.PodSpec{ServiceAccountName: "b", Containers: []corev1.Container{{Name: "side", Image: "x"}}}}
		}, []string{"spec.serviceAccountName and spec.template.spec.serviceAccountName differ"}},
		{"affinity in two places", func(w *v1.WorkerPool) {
			a := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 1,
				Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpExists}}}}}}}
			w.Spec.Affinity = a
			w.Spec.Template = &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Affinity: a, Containers: []corev1.Container{{Name: "side", Image: "x"}}}}
		}, []string{"spec.affinity and spec.template.spec.affinity are both set"}},
		{"too many containers", func(w *v1.WorkerPool) {
			w.Spec.Template = &corev1.PodTemplateSpec{}
			for i := range 33 {
				w.Spec.Template.Spec.Containers = append(w.Spec.Template.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: "x"})
			}
		}, []string{"spec.template.spec.containers", "must have at most 32 items"}},
		{"rollout that cannot move", func(w *v1.WorkerPool) {
			w.Spec.Rollout = &v1.RolloutSpec{MaxSurge: ptr(intstr.FromInt32(0)), MaxUnavailable: ptr(intstr.FromString("0%"))}
		}, []string{"spec.rollout: maxSurge and maxUnavailable cannot both be 0"}},
		{"rollout surge not a percentage", func(w *v1.WorkerPool) { w.Spec.Rollout = &v1.RolloutSpec{MaxSurge: ptr(intstr.FromString("25 pods"))} },
			[]string{"spec.rollout.maxSurge must be a non-negative number or a percentage"}},
		{"rollout deadline zero", func(w *v1.WorkerPool) { w.Spec.Rollout = &v1.RolloutSpec{ProgressDeadlineSeconds: ptr(int32(0))} },
			[]string{"spec.rollout.progressDeadlineSeconds"}},
		{"disruption budget both ways", func(w *v1.WorkerPool) {
			w.Spec.Disruption = &v1.DisruptionSpec{Enabled: true, MaxUnavailable: ptr(intstr.FromInt32(1)), MinAvailable: ptr(intstr.FromInt32(1))}
		}, []string{"spec.disruption: set maxUnavailable or minAvailable, not both"}},
		{"disruption budget switched off with a value", func(w *v1.WorkerPool) {
			w.Spec.Disruption = &v1.DisruptionSpec{Enabled: false, MinAvailable: ptr(intstr.FromString("50%"))}
		}, []string{"spec.disruption: maxUnavailable and minAvailable need enabled: true"}},
		{"autoscaling min over max", func(w *v1.WorkerPool) {
			w.Spec.Replicas, w.Spec.Autoscaling = nil, &v1.AutoscalingSpec{MinReplicas: ptr(int32(5)), MaxReplicas: 2, TargetOldestReadyAge: "5s"}
		}, []string{"spec.autoscaling.minReplicas must be at most spec.autoscaling.maxReplicas"}},
		{"autoscaling without a target", func(w *v1.WorkerPool) {
			w.Spec.Replicas, w.Spec.Autoscaling = nil, &v1.AutoscalingSpec{MaxReplicas: 2}
		}, []string{"spec.autoscaling needs at least one target"}},
		{"replicas and autoscaling", func(w *v1.WorkerPool) {
			w.Spec.Replicas, w.Spec.Autoscaling = ptr(int32(3)), &v1.AutoscalingSpec{MaxReplicas: 4, TargetOldestReadyAge: "5s"}
		}, []string{"spec.replicas and spec.autoscaling are both set"}},
		{"autoscaling target age not a duration", func(w *v1.WorkerPool) {
			w.Spec.Replicas, w.Spec.Autoscaling = nil, &v1.AutoscalingSpec{MaxReplicas: 4, TargetOldestReadyAge: "5 seconds"}
		}, []string{"spec.autoscaling.targetOldestReadyAge"}},
		{"autoscaling zero target age", func(w *v1.WorkerPool) {
			w.Spec.Replicas, w.Spec.Autoscaling = nil, &v1.AutoscalingSpec{MaxReplicas: 4, TargetOldestReadyAge: "0s"}
		}, []string{"spec.autoscaling.targetOldestReadyAge must be a positive duration"}},
		{"autoscaling utilisation over 100", func(w *v1.WorkerPool) {
			w.Spec.Replicas, w.Spec.Autoscaling = nil, &v1.AutoscalingSpec{MaxReplicas: 4, TargetUtilizationPercent: ptr(int32(150))}
		}, []string{"spec.autoscaling.targetUtilizationPercent"}},
		{"autoscaling policy of an unknown type", func(w *v1.WorkerPool) {
			w.Spec.Replicas, w.Spec.Autoscaling = nil, &v1.AutoscalingSpec{MaxReplicas: 4, TargetOldestReadyAge: "5s",
				Behavior: &v1.AutoscalingBehavior{ScaleUp: &v1.ScalingRules{Policies: []v1.ScalingPolicy{{Type: "Nodes", Value: 1, Period: "15s"}}}}}
		}, []string{"spec.autoscaling.behavior.scaleUp.policies[0].type", "Pods", "Percent"}},
		{"autoscaling window too long", func(w *v1.WorkerPool) {
			w.Spec.Replicas, w.Spec.Autoscaling = nil, &v1.AutoscalingSpec{MaxReplicas: 4, TargetOldestReadyAge: "5s",
				Behavior: &v1.AutoscalingBehavior{ScaleDown: &v1.ScalingRules{StabilizationWindow: "2h"}}}
		}, []string{"spec.autoscaling.behavior.scaleDown.stabilizationWindow", "between 0s and 1h"}},
		{"unknown eviction policy", func(w *v1.WorkerPool) {
			w.Spec.Disruption = &v1.DisruptionSpec{Enabled: true, UnhealthyPodEvictionPolicy: "Never"}
		}, []string{"spec.disruption.unhealthyPodEvictionPolicy", "AlwaysAllow", "IfHealthyBudget"}},
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
	// With autoscaling, spec.replicas may be left out, or left at its default.
	auto := minimal("autoscaled-at-default")
	auto.Spec.Autoscaling = &v1.AutoscalingSpec{MaxReplicas: 4, TargetOldestReadyAge: "5s"}
	if err := k8s.Create(ctx(t), auto); err != nil {
		t.Errorf("autoscaling with the default replicas refused: %v", err)
	}
	// The image may come from the template alone, and the same value may be
	// given in both places.
	fromTemplate := minimal("image-from-template")
	fromTemplate.Spec.Image, fromTemplate.Spec.Template = "", workerTemplate(corev1.Container{Name: "worker", Image: "scoring:1"})
	same := minimal("image-twice-alike")
	same.Spec.Template = workerTemplate(corev1.Container{Name: "worker", Image: same.Spec.Image})
	for _, wp := range []*v1.WorkerPool{fromTemplate, same} {
		if err := k8s.Create(ctx(t), wp); err != nil {
			t.Errorf("%s refused: %v", wp.Name, err)
		}
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

// workerTemplate is a pod template with the given containers.
func workerTemplate(containers ...corev1.Container) *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: containers}}
}
