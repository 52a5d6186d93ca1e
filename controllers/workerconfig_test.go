package controllers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
)

func fullPool() *v1.WorkerPool {
	return &v1.WorkerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: "shop"},
		Spec: v1.WorkerPoolSpec{
			Replicas: ptr.To(int32(3)), Image: "tasker-worker:v1",
			Queue: v1.QueueSpec{Namespaces: []v1.QueueName{"payments", "refunds"}, VisibilityTimeout: "45s", BatchSize: 20, PollInterval: "250ms",
				DatabaseSecretRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "url"}},
			Dispatch: v1.DispatchSpec{DispatchBufferSize: 500, CompletionBufferSize: 400, MaxConcurrentHandlers: 32, HandlerTimeout: "1m30s",
				CompletionSendTimeout: "5s", SaturationWarningPercent: 70, SaturationCriticalPercent: 90},
			FFI: v1.FFISpec{Enabled: true, DispatchBufferSize: 300, CompletionTimeout: "20s", StarvationWarningThreshold: "2500ms",
				CallbackTimeout: "1s", CallbackStrategy: "BlockingWithTimeout"},
			Drain: v1.DrainSpec{Timeout: "2m"},
		},
	}
}

// Every spec field lands on its worker.toml key, in the worker's units, and
// the rendered file parses back (through the worker's own parser) to it.
func TestWorkerConfigMapsEveryField(t *testing.T) {
	toml, hash, err := renderWorkerConfig(fullPool())
	if err != nil {
		t.Fatal(err)
	}
	got, err := config.Parse([]byte(toml))
	if err != nil {
		t.Fatalf("the worker refuses what the operator rendered: %v\n%s", err, toml)
	}
	want := config.Default()
	want.Worker.Queue.Namespaces = []string{"payments", "refunds"}
	want.Worker.Queue.VisibilityTimeoutMS, want.Worker.Queue.BatchSize, want.Worker.Queue.PollIntervalMS = 45000, 20, 250
	hd := &want.Worker.MPSCChannels.HandlerDispatch
	hd.DispatchBufferSize, hd.CompletionBufferSize, hd.MaxConcurrentHandlers = 500, 400, 32
	hd.HandlerTimeoutMS, hd.CompletionSendTimeoutMS = 90000, 5000
	hd.SaturationWarningThreshold, hd.SaturationCriticalThreshold = 0.7, 0.9
	fd := &want.Worker.MPSCChannels.FFIDispatch
	fd.Enabled, fd.DispatchBufferSize, fd.CompletionTimeoutMS, fd.StarvationWarningThresholdMS = true, 300, 20000, 2500
	fd.CallbackTimeoutMS, fd.CallbackStrategy = 1000, config.CallbackBlockingWithTimeout
	want.Worker.Drain.TimeoutMS = 120000
	gotToml, _ := got.Render()
	wantToml, _ := want.Render()
	if string(gotToml) != string(wantToml) {
		t.Fatalf("rendered config:\n%s\nwant:\n%s", gotToml, wantToml)
	}
	if strings.Contains(toml, "worker_id") {
		t.Error("one ConfigMap serves every pod: worker_id must be left to each pod")
	}
	// The hash follows the file: same spec, same hash; any change, new hash.
	_, again, _ := renderWorkerConfig(fullPool())
	changed := fullPool()
	changed.Spec.Dispatch.MaxConcurrentHandlers = 33
	_, other, _ := renderWorkerConfig(changed)
	if hash != again || hash == other || len(hash) != 16 {
		t.Fatalf("hashes %q %q %q", hash, again, other)
	}
}

// What the schema lets through but the worker would refuse is named.
func TestWorkerConfigRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*v1.WorkerPool)
		want   string
	}{
		{"sub-millisecond duration", func(p *v1.WorkerPool) { p.Spec.Dispatch.HandlerTimeout = "1500us" }, `spec.dispatch.handlerTimeout: "1500us" must be a whole number of milliseconds`},
		{"unparseable duration", func(p *v1.WorkerPool) { p.Spec.Queue.PollInterval = "soon" }, `spec.queue.pollInterval: "soon" is not a duration`},
		{"over the worker's 24h bound", func(p *v1.WorkerPool) { p.Spec.Drain.Timeout = "25h" }, "worker.drain.timeout_ms = 90000000: must be between 1 and"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fullPool()
			tc.mutate(p)
			_, _, err := renderWorkerConfig(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDeploymentPassesThroughAndHardens(t *testing.T) {
	p := fullPool()
	p.Spec.PodLabels = map[string]string{"team": "pay", v1.PoolLabel: "spoofed"}
	p.Spec.Env = []corev1.EnvVar{{Name: "EXTRA", Value: "1"}}
	d := desiredDeployment(p, "abc", specReplicas(p))
	tpl := d.Spec.Template
	if tpl.Labels["team"] != "pay" || tpl.Labels[v1.PoolLabel] != "payments" || d.Spec.Selector.MatchLabels[v1.PoolLabel] != "payments" {
		t.Fatalf("labels %v selector %v", tpl.Labels, d.Spec.Selector)
	}
	if *tpl.Spec.TerminationGracePeriodSeconds != 135 { // 2m drain + 15s margin
		t.Fatalf("grace period %d", *tpl.Spec.TerminationGracePeriodSeconds)
	}
	c := tpl.Spec.Containers[0]
	if c.Env[0].ValueFrom.SecretKeyRef.Name != "db" || c.Env[len(c.Env)-1].Name != "EXTRA" {
		t.Fatalf("env %+v", c.Env)
	}
	if sc := c.SecurityContext; !*sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || sc.Capabilities.Drop[0] != "ALL" {
		t.Fatalf("container security context %+v", sc)
	}
	if tpl.Spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Fatal("no RuntimeDefault seccomp profile")
	}
	if desiredPDB(p, specReplicas(p)) == nil {
		t.Error("3 replicas and no PodDisruptionBudget")
	}
	p.Spec.Replicas = ptr.To(int32(1))
	if desiredPDB(p, specReplicas(p)) != nil {
		t.Error("a PodDisruptionBudget on one replica would block every node drain")
	}
}
