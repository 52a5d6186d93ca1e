//go:build e2e

// Package e2e runs the product as users meet it, on a real single-node
// cluster (hack/cluster): helm install, kubectl apply, kubectl describe,
// kubectl scale, pods deleted mid-run, helm upgrade and uninstall. Run it
// with `make e2e`, which brings the cluster up and sets the environment.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/internal/memlimit"
)

// The suite installs its own release in its own namespace, watching only
// the suite's namespace, so a running `make demo` (release wpo in
// workerpool-system, watching namespace demo) is left alone.
const (
	operatorNS = "workerpool-e2e"
	release    = "wpo-e2e"
	chartDir   = "../../charts/workerpool-operator"
)

var e *env

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var err error
	e, err = newEnv(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	e.db.Close()
	os.Exit(code)
}

// TestOperator is one ordered story: each step needs the ones before it.
func TestOperator(t *testing.T) {
	ns := "e2e-" + rand.String(5)
	t.Cleanup(func() {
		if t.Failed() {
			dump(t, ns)
		}
		_, _ = run(t, "kubectl", "delete", "namespace", ns, "--wait=false")
	})
	kubectl(t, "create", "namespace", ns)
	if err := e.k8s.Create(context.Background(), dbSecret(ns, e.databaseURL)); err != nil {
		t.Fatal(err)
	}
	prom = startPrometheus(t, ns)

	steps := []struct {
		name string
		fn   func(*testing.T, string)
	}{
		{"helm install", installOperator},
		{"a blocked pool says why, then recovers", stalled},
		{"samples become Ready and complete their steps", samples},
		{"a pod template with an init container and a sidecar; suspend and resume", templated},
		{"describe shows in-flight, saturation and pending age", describe},
		{"slow Python handler: Starving True and back", starving},
		{"Python handlers that raise: retried, or dead with the Python error", foreignFailures},
		{"Python handlers that time out, under each callback strategy", foreignTimeouts},
		{"a Python poller process killed: the container restarts, no step lost", killedPoller},
		{"tiny completion buffer: Backpressure", backpressure},
		{"changing a tunable rolls the pods", rollsOnChange},
		{"kubectl scale keeps Ready", scale},
		{"deleting a pod mid-run loses no step", podDeletion},
		{"throughput: 3 replicas against 1; Python and Ruby against native", throughput},
		{"autoscaling: a burst scales out and back in", autoscaledBurst},
		{"autoscaling: steady load does not flap", autoscaledSteadyLoad},
		{"autoscaling: an idle pool goes to zero and wakes", autoscaledToZero},
		{"helm upgrade then uninstall leaves no operator objects", upgradeAndUninstall},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.fn(t, ns) }) {
			t.Fatalf("stopping after %q failed", s.name)
		}
	}
}

func splitImage(ref string) (repo, tag string) {
	i := strings.LastIndex(ref, ":")
	return ref[:i], ref[i+1:]
}

func installOperator(t *testing.T, ns string) {
	repo, tag := splitImage(e.operatorImage)
	// A run that failed half-way leaves its release behind.
	e.helmCmd(t, "uninstall", release, "--namespace", operatorNS, "--ignore-not-found", "--wait", "--timeout", "3m")
	start := time.Now()
	// --take-ownership: the cluster-wide WorkerPool CRD may belong to
	// another release (the demo's); this one takes it over (it is kept on
	// uninstall either way).
	e.helmCmd(t, "install", release, chartDir, "--namespace", operatorNS, "--create-namespace", "--take-ownership",
		"--set", "image.repository="+repo, "--set", "image.tag="+tag, "--set", "image.pullPolicy=Never",
		"--set", "watchNamespaces={"+ns+"}", "--set", "manager.statusInterval=2s", "--wait", "--timeout", "3m")
	t.Logf("helm install --wait took %s", time.Since(start).Round(100*time.Millisecond))
	out := kubectl(t, "get", "crd", "workerpools.workers.tasker.dev", "-o", "jsonpath={.metadata.annotations.helm\\.sh/resource-policy}")
	if out != "keep" {
		t.Errorf("CRD resource-policy %q, want keep", out)
	}
	// The operator's Go memory limit follows its container's (the chart's
	// resources.limits.memory, read from the pod's own cgroup): 90 % of it
	// less the binary's mapped code, which the container's limit counts too.
	limit := kubectl(t, "get", "deploy", "-n", operatorNS, "-l", "app.kubernetes.io/instance="+release,
		"-o", "jsonpath={.items[0].spec.template.spec.containers[0].resources.limits.memory}")
	q, err := resource.ParseQuantity(limit)
	if err != nil {
		t.Fatalf("the operator's memory limit %q: %v", limit, err)
	}
	eventually(t, "the operator logs its Go memory limit", time.Minute, func() (bool, string) {
		logs, err := run(t, "kubectl", "logs", "-n", operatorNS, "-l", "app.kubernetes.io/instance="+release, "--tail=-1")
		for _, line := range strings.Split(logs, "\n") {
			if !strings.Contains(line, "Go memory limit set from the container's") {
				continue
			}
			var set struct{ Bytes, CodeBytes int64 }
			if err := json.Unmarshal([]byte(line), &set); err != nil {
				return false, fmt.Sprintf("the memory limit line %q: %v", line, err)
			}
			want := memlimit.ForContainer(q.Value(), set.CodeBytes)
			if set.CodeBytes < 10<<20 || set.Bytes != want {
				return false, fmt.Sprintf("the memory limit line %q: want codeBytes over 10 MiB and bytes %d (memlimit.ForContainer of %d)", line, want, q.Value())
			}
			return true, ""
		}
		return false, fmt.Sprintf("no memory limit line; err %v, logs:\n%s", err, logs)
	})
}

// workerPool is a pool running the stock worker image on queue q.
func workerPool(ns, name, q string) *v1.WorkerPool {
	repo, tag := splitImage(e.workerImage)
	return &v1.WorkerPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.WorkerPoolSpec{
			Image: repo + ":" + tag, ImagePullPolicy: corev1.PullNever,
			Queue: v1.QueueSpec{Namespaces: []v1.QueueName{v1.QueueName(q)},
				DatabaseSecretRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "tasker-db"}, Key: "url"}},
		},
	}
}

func ready(wp *v1.WorkerPool) bool {
	return wp.Status.ObservedGeneration == wp.Generation && cond(wp, v1.ConditionReady).Status == metav1.ConditionTrue
}

// samples applies each sample of config/samples with the images this run
// built: the native ones with the stock worker image, the foreign ones (FFI)
// as they are, with their own image, so Python and Ruby pollers do the work.
// Other objects of the directory (the ConfigMap of handler code) go first.
func samples(t *testing.T, ns string) {
	files, err := filepath.Glob("../../config/samples/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("samples: %v %v", files, err)
	}
	var pools []string
	for _, f := range files {
		switch base := filepath.Base(f); {
		case strings.HasPrefix(base, "workers_"):
			pools = append(pools, f)
		case base != "kustomization.yaml":
			kubectl(t, "apply", "-n", ns, "-f", f)
		}
	}
	repo, tag := splitImage(e.workerImage)
	foreign := map[string]string{e.pythonImage: "StockFailure", e.rubyImage: "TaskerWorker::Stock::Failure"}
	for _, f := range pools {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		wp := &v1.WorkerPool{}
		if err := yaml.UnmarshalStrict(data, wp); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		wp.Namespace = ns
		failure, isForeign := foreign[wp.Spec.Image]
		if wp.Spec.FFI.Enabled != isForeign {
			t.Fatalf("%s: image %s with ffi.enabled %v: an FFI sample runs a foreign-handler image, a native one the stock worker",
				f, wp.Spec.Image, wp.Spec.FFI.Enabled)
		}
		// The sample as written, with this run's image and Secret: a typed
		// round trip would write out fields the sample leaves to the API
		// server's defaults (disruption.enabled: false).
		var manifest map[string]any
		if err := yaml.Unmarshal(data, &manifest); err != nil {
			t.Fatal(err)
		}
		spec := manifest["spec"].(map[string]any)
		if !isForeign {
			spec["image"] = repo + ":" + tag
		}
		spec["imagePullPolicy"] = string(corev1.PullNever)
		spec["queue"].(map[string]any)["databaseSecretRef"] = map[string]any{"name": "tasker-db", "key": "url"}
		manifest["metadata"].(map[string]any)["namespace"] = ns
		out, err := yaml.Marshal(manifest)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		kubectlApply(t, out)
		got := e.waitPool(t, ns, wp.Name, "Ready", 3*time.Minute, ready)
		t.Logf("%s (%s, %s) Ready in %s", wp.Name, filepath.Base(f), wp.Spec.Image, time.Since(start).Round(100*time.Millisecond))
		// Ready needs the replicas the disruption budget asks for; wait for
		// all of them, and for each pod's capacity in the status.
		want := *got.Spec.Replicas
		got = e.waitPool(t, ns, wp.Name, "every replica ready and read", time.Minute, func(w *v1.WorkerPool) bool {
			return ready(w) && w.Status.ReadyReplicas == want && w.Status.Dispatch.Capacity == w.Spec.Dispatch.MaxConcurrentHandlers*want
		})
		t.Logf("%s: capacity %d = %d replicas × %d", wp.Name, got.Status.Dispatch.Capacity, want, got.Spec.Dispatch.MaxConcurrentHandlers)
		q := string(wp.Spec.Queue.Namespaces[0])
		before := e.completed(t, q)
		e.enqueue(t, q, "noop", `{}`, 50)
		e.enqueue(t, q, "sleep", `{"ms":300}`, 20)
		e.enqueue(t, q, "fail", `{"fail_attempts":1}`, 5)
		n := int64(75)
		if wp.Name == "scoring" { // its handler comes from the ConfigMap
			e.enqueue(t, q, "score", `{"features":[1,2,6]}`, 5)
			n += 5
		}
		e.waitDrained(t, q, before+n, 3*time.Minute)
		if isForeign {
			// The retried failure was raised in Python or Ruby: the stock
			// handlers' exception class, not the Go worker's handler_error.
			for _, o := range e.outcomes(t, q, "fail") {
				if o.ErrorType != failure || o.Attempts != 2 || o.Result != `{"succeeded_on_attempt": 2}` {
					t.Errorf("%s: fail step %+v, want raised as %s on attempt 1 and done on 2", wp.Name, o, failure)
					break
				}
			}
		}
		if wp.Name == "scoring" {
			for _, o := range e.outcomes(t, q, "score") {
				if o.Result != `{"score": 3.0}` {
					t.Errorf("score step %+v, want the ConfigMap's handler's result {\"score\": 3.0}", o)
				}
			}
		}
		kubectl(t, "delete", "wp", wp.Name, "-n", ns, "--wait=true", "--timeout=2m")
	}
}

// templated: spec.template adds an init container (applying the queue
// schema before the worker starts) and a native sidecar; the pool becomes
// Ready and completes steps. spec.suspend takes it to zero pods (Ready,
// reason Suspended; steps wait) and back (the steps complete).
func templated(t *testing.T, ns string) {
	wp := workerPool(ns, "templated", "templated")
	wp.Spec.Replicas = ptr(int32(2))
	restricted := &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
		RunAsNonRoot: ptr(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	wp.Spec.Template = &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"example.com/tier": "batch"}},
		Spec: corev1.PodSpec{InitContainers: []corev1.Container{
			{Name: "migrate", Image: e.workerImage, ImagePullPolicy: corev1.PullNever, Args: []string{"migrate"}, SecurityContext: restricted,
				Env: []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &wp.Spec.Queue.DatabaseSecretRef}}}},
			{Name: "sidecar", Image: e.pauseImage, ImagePullPolicy: corev1.PullNever, RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways),
				SecurityContext: restricted},
		}},
	}
	kubectlApply(t, e.poolManifest(t, wp))
	e.waitPool(t, ns, "templated", "both replicas Ready", 3*time.Minute, func(w *v1.WorkerPool) bool {
		return ready(w) && w.Status.ReadyReplicas == 2
	})
	for _, p := range poolPods(t, ns, "templated") {
		var init []string
		for _, cs := range p.Status.InitContainerStatuses {
			switch {
			case cs.State.Terminated != nil:
				init = append(init, cs.Name+" done, exit "+fmt.Sprint(cs.State.Terminated.ExitCode))
			case cs.State.Running != nil:
				init = append(init, cs.Name+" running")
			}
		}
		if strings.Join(init, "; ") != "migrate done, exit 0; sidecar running" || p.Labels["example.com/tier"] != "batch" {
			t.Errorf("pod %s: init containers %q, labels %v", p.Name, init, p.Labels)
		}
	}
	e.enqueue(t, "templated", "noop", `{}`, 50)
	e.waitDrained(t, "templated", 50, 3*time.Minute)

	kubectl(t, "patch", "wp", "templated", "-n", ns, "--type=merge", "-p", `{"spec":{"suspend":true}}`)
	got := e.waitPool(t, ns, "templated", "suspended, no pods", 3*time.Minute, func(w *v1.WorkerPool) bool {
		return w.Status.ObservedGeneration == w.Generation && cond(w, v1.ConditionReconciling).Reason == v1.ReasonSuspended &&
			len(poolPods(t, ns, "templated")) == 0
	})
	if c := cond(got, v1.ConditionReady); c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonSuspended {
		t.Errorf("Ready while suspended: %+v", c)
	}
	kubectl(t, "wait", "--for=condition=Ready", "wp/templated", "-n", ns, "--timeout=1m")
	t.Logf("$ kubectl get wp templated\n%s", kubectl(t, "get", "wp", "templated", "-n", ns))
	if res := kstatusOf(t, ns, "templated"); res.Status != kstatus.CurrentStatus {
		t.Errorf("kstatus while suspended: %s (%s)", res.Status, res.Message)
	}
	e.enqueue(t, "templated", "noop", `{}`, 20)
	kubectl(t, "patch", "wp", "templated", "-n", ns, "--type=merge", "-p", `{"spec":{"suspend":false}}`)
	e.waitPool(t, ns, "templated", "resumed", 3*time.Minute, func(w *v1.WorkerPool) bool {
		return ready(w) && w.Status.ReadyReplicas == 2 && cond(w, v1.ConditionReady).Reason == v1.ReasonPoolReady
	})
	e.waitDrained(t, "templated", 70, 3*time.Minute)
	kubectl(t, "delete", "wp", "templated", "-n", ns, "--wait=true", "--timeout=2m")
}

// describe: a busy pool shows its figures in kubectl describe.
func describe(t *testing.T, ns string) {
	wp := foreignPool(ns, "busy", "busy", e.pythonImage)
	wp.Spec.Dispatch.MaxConcurrentHandlers = 20
	kubectlApply(t, e.poolManifest(t, wp))
	e.waitPool(t, ns, "busy", "Ready", 3*time.Minute, ready)
	e.enqueue(t, "busy", "sleep", `{"ms":2000}`, 12)
	e.waitPool(t, ns, "busy", "busy in status", time.Minute, func(w *v1.WorkerPool) bool {
		return w.Status.FFI.PendingEvents > 0 && w.Status.FFI.OldestPendingAge != "" && w.Status.FFI.OldestPendingAge != "0s"
	})
	out := kubectl(t, "describe", "wp", "busy", "-n", ns)
	for _, want := range []string{"In Flight:", "Capacity:", "Completion Saturation Percent:", "Pending Events:", "Oldest Pending Age:", "Conditions:", "Starving", "Backpressure"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl describe wp lacks %q:\n%s", want, out)
		}
	}
	get := kubectl(t, "get", "wp", "busy", "-n", ns, "-o", "wide")
	t.Logf("$ kubectl get wp -o wide\n%s", get)
	for _, col := range []string{"READY", "REPLICAS", "PENDING", "OLDEST", "SATURATION", "INFLIGHT", "STARVING"} {
		if !strings.Contains(get, col) {
			t.Errorf("kubectl get wp -o wide lacks column %s", col)
		}
	}
	e.waitDrained(t, "busy", 12, 3*time.Minute)
	kubectl(t, "delete", "wp", "busy", "-n", ns, "--wait=true", "--timeout=2m")
}

// slowSteps is how many 4 s steps the starving scenario enqueues.
const slowSteps = 50

// starving: Python handlers that take 4 s, past a 2 s threshold, on two
// polling threads: the events polled and those waiting age past it. The
// suite's Prometheus shows every dashboard panel for the pool, and fires
// WorkerPoolStarving and resolves it once the pool recovers.
func starving(t *testing.T, ns string) {
	wp := foreignPool(ns, "slow-python", "slowpy", e.pythonImage)
	wp.Spec.FFI = v1.FFISpec{Enabled: true, StarvationWarningThreshold: "2s", CompletionTimeout: "60s", CallbackTimeout: "1s"}
	kubectlApply(t, e.poolManifest(t, wp))
	e.waitPool(t, ns, "slow-python", "Ready", 3*time.Minute, ready)
	// 50 steps of 4 s on two polling threads keep events waiting past the
	// threshold for well over the WorkerPoolStarving alert's minute.
	e.enqueue(t, "slowpy", "sleep", `{"ms":4000}`, slowSteps)
	got := e.waitPool(t, ns, "slow-python", "Starving=True", 2*time.Minute, func(w *v1.WorkerPool) bool {
		return cond(w, v1.ConditionStarving).Status == metav1.ConditionTrue
	})
	msg := cond(got, v1.ConditionStarving).Message
	t.Logf("Starving: %s", msg)
	if !strings.Contains(msg, "waited") && !strings.Contains(msg, "no poll for") {
		t.Errorf("Starving message %q says neither how long an event waited nor since when no poll came", msg)
	}
	t.Logf("$ kubectl describe wp slow-python (Starving)\n%s", kubectl(t, "describe", "wp", "slow-python", "-n", ns))
	prom.checkDashboard(t, ns, "slow-python")
	prom.alertPendingThenFiring(t, ns, "slow-python", "WorkerPoolStarving")
	e.waitDrained(t, "slowpy", slowSteps, 5*time.Minute)
	e.waitPool(t, ns, "slow-python", "Starving=False", time.Minute, func(w *v1.WorkerPool) bool {
		return cond(w, v1.ConditionStarving).Status == metav1.ConditionFalse
	})
	prom.waitAlert(t, ns, "slow-python", "WorkerPoolStarving", "", time.Minute)
	t.Log("Prometheus: WorkerPoolStarving for slow-python resolved")
	t.Logf("$ kubectl describe wp slow-python (recovered)\n%s", kubectl(t, "describe", "wp", "slow-python", "-n", ns))
	events := kubectl(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=slow-python", "-o", "jsonpath={.items[*].reason}")
	if !strings.Contains(events, "Starving") || !strings.Contains(events, "StarvingCleared") {
		t.Errorf("events on slow-python: %q", events)
	}
	for _, o := range e.outcomes(t, "slowpy", "sleep") {
		if o.State != "completed" || o.Result != `{"slept_ms": 4000}` {
			t.Errorf("sleep step %+v, want completed by the Python handler", o)
		}
	}
	kubectl(t, "delete", "wp", "slow-python", "-n", ns, "--wait=true", "--timeout=2m")
}

// backpressure: a completion buffer of 2 and a stalled database (the
// steps table locked by this test) fill the completion channel: results
// cannot be persisted. Releasing the lock drains it.
func backpressure(t *testing.T, ns string) {
	wp := workerPool(ns, "tiny-buffer", "tiny")
	wp.Spec.Dispatch = v1.DispatchSpec{CompletionBufferSize: 2, MaxConcurrentHandlers: 8, SaturationWarningPercent: 50, SaturationCriticalPercent: 90}
	kubectlApply(t, e.poolManifest(t, wp))
	e.waitPool(t, ns, "tiny-buffer", "Ready", 3*time.Minute, ready)
	// Durations spread 50 ms apart, so results keep arriving one by one: once
	// the table is locked, the completion processor blocks on its batch and
	// the next two results fill the channel. (Results of steps that all end
	// together could be taken in one batch, leaving the channel empty.)
	for i := range 60 {
		e.enqueue(t, "tiny", "sleep", fmt.Sprintf(`{"ms":%d}`, 500+50*i), 1)
	}
	e.waitPool(t, ns, "tiny-buffer", "handlers running", time.Minute, func(w *v1.WorkerPool) bool { return w.Status.Dispatch.InFlight > 0 })

	tx, err := e.db.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), "LOCK TABLE tasker_steps IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	locked := true
	defer func() {
		if locked {
			_ = tx.Rollback(context.Background())
		}
	}()
	got := e.waitPool(t, ns, "tiny-buffer", "Backpressure=True", 2*time.Minute, func(w *v1.WorkerPool) bool {
		return cond(w, v1.ConditionBackpressure).Status == metav1.ConditionTrue
	})
	c := cond(got, v1.ConditionBackpressure)
	t.Logf("Backpressure %s: %s", c.Reason, c.Message)
	if c.Reason != v1.ReasonSaturationCritical || got.Status.Dispatch.CompletionSaturationPercent != 100 {
		t.Errorf("a full buffer of 2 should be Critical at 100%%: %s", summary(got))
	}
	// The database stays stalled until Prometheus fires the pool's alert
	// (from the operator's condition gauge) and the workers' own
	// (from the completion channel's saturation).
	prom.alertPendingThenFiring(t, ns, "tiny-buffer", "WorkerPoolBackpressure")
	prom.waitAlert(t, ns, "tiny-buffer", "CompletionChannelCritical", "firing", time.Minute)
	t.Log("Prometheus: CompletionChannelCritical for tiny-buffer firing")
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	locked = false
	e.waitDrained(t, "tiny", 60, 4*time.Minute)
	e.waitPool(t, ns, "tiny-buffer", "Backpressure=False", time.Minute, func(w *v1.WorkerPool) bool {
		return cond(w, v1.ConditionBackpressure).Status == metav1.ConditionFalse
	})
	prom.waitAlert(t, ns, "tiny-buffer", "WorkerPoolBackpressure", "", time.Minute)
	prom.waitAlert(t, ns, "tiny-buffer", "CompletionChannelCritical", "", time.Minute)
	t.Log("Prometheus: WorkerPoolBackpressure and CompletionChannelCritical for tiny-buffer resolved")
	kubectl(t, "delete", "wp", "tiny-buffer", "-n", ns, "--wait=true", "--timeout=2m")
}

func poolPods(t *testing.T, ns, name string) []corev1.Pod {
	t.Helper()
	pods := &corev1.PodList{}
	if err := e.k8s.List(context.Background(), pods, client.InNamespace(ns), client.MatchingLabels{v1.PoolLabel: name}); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// rollsOnChange: a tunable change replaces every pod and the new capacity shows.
func rollsOnChange(t *testing.T, ns string) {
	wp := workerPool(ns, "tunable", "tunable")
	wp.Spec.Replicas = ptr(int32(2))
	wp.Spec.Dispatch.MaxConcurrentHandlers = 4
	kubectlApply(t, e.poolManifest(t, wp))
	e.waitPool(t, ns, "tunable", "Ready", 3*time.Minute, ready)
	before := map[string]bool{}
	for _, p := range poolPods(t, ns, "tunable") {
		before[p.Name] = true
	}
	kubectl(t, "patch", "wp", "tunable", "-n", ns, "--type=merge", "-p", `{"spec":{"dispatch":{"maxConcurrentHandlers":6}}}`)
	e.waitPool(t, ns, "tunable", "new capacity 2×6", 3*time.Minute, func(w *v1.WorkerPool) bool {
		return ready(w) && w.Status.Dispatch.Capacity == 12 && w.Status.UpdatedReplicas == 2
	})
	eventually(t, "old pods replaced", 2*time.Minute, func() (bool, string) {
		pods := poolPods(t, ns, "tunable")
		names := []string{}
		for _, p := range pods {
			if before[p.Name] {
				return false, fmt.Sprint("old pod still there: ", p.Name)
			}
			names = append(names, p.Name)
		}
		return len(pods) == 2, fmt.Sprint(names)
	})
}

// scale: kubectl scale goes through /scale to the Deployment, up and
// down, and Ready stays True throughout: a change of replica count is not
// a rollout.
func scale(t *testing.T, ns string) {
	before := cond(e.pool(t, ns, "tunable"), v1.ConditionReady)
	if before.Status != metav1.ConditionTrue {
		t.Fatalf("tunable not Ready before scaling: %+v", before)
	}
	for _, step := range []struct {
		replicas int32
		capacity int32
	}{{3, 18}, {1, 6}, {2, 12}} {
		kubectl(t, "scale", "wp", "tunable", "-n", ns, fmt.Sprintf("--replicas=%d", step.replicas))
		e.waitPool(t, ns, "tunable", fmt.Sprintf("%d ready replicas, Ready throughout", step.replicas), 3*time.Minute, func(w *v1.WorkerPool) bool {
			if c := cond(w, v1.ConditionReady); c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Equal(&before.LastTransitionTime) {
				t.Fatalf("Ready flapped while scaling to %d: %+v (True since %s)", step.replicas, c, before.LastTransitionTime)
			}
			return ready(w) && w.Status.ReadyReplicas == step.replicas && w.Status.Replicas == step.replicas &&
				w.Status.Dispatch.Capacity == step.capacity && cond(w, v1.ConditionReconciling).Status == metav1.ConditionFalse
		})
		if got := kstatusOf(t, ns, "tunable"); got.Status != kstatus.CurrentStatus {
			t.Errorf("kstatus after scaling to %d: %s (%s)", step.replicas, got.Status, got.Message)
		}
	}
	kubectl(t, "scale", "wp", "tunable", "-n", ns, "--replicas=3")
	e.waitPool(t, ns, "tunable", "3 ready replicas", 3*time.Minute, func(w *v1.WorkerPool) bool {
		return ready(w) && w.Status.ReadyReplicas == 3 && w.Status.Dispatch.Capacity == 18
	})
	dep := &appsv1.Deployment{}
	if err := e.k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "tunable"}, dep); err != nil {
		t.Fatal(err)
	}
	if *dep.Spec.Replicas != 3 {
		t.Errorf("Deployment replicas %d", *dep.Spec.Replicas)
	}
}

// podDeletion: a pod deleted while its handlers run loses nothing: it
// drains on SIGTERM (or its claims expire) and every step completes.
func podDeletion(t *testing.T, ns string) {
	const n = 300
	e.enqueue(t, "tunable", "sleep", `{"ms":400}`, n)
	e.waitPool(t, ns, "tunable", "handlers running", time.Minute, func(w *v1.WorkerPool) bool { return w.Status.Dispatch.InFlight > 0 })
	pods := poolPods(t, ns, "tunable")
	victim := pods[0].Name
	kubectl(t, "delete", "pod", victim, "-n", ns, "--wait=false")
	t.Logf("deleted %s mid-run", victim)
	s := e.waitDrained(t, "tunable", n, 4*time.Minute)
	t.Logf("queue after the deletion: %+v", s)
	e.waitPool(t, ns, "tunable", "Ready again", 3*time.Minute, func(w *v1.WorkerPool) bool { return ready(w) && w.Status.ReadyReplicas == 3 })
}

// throughput measures steps/s of noop steps through a 3-replica pool
// tuned like the native sample and, in the same run, through 1 replica, so
// the figure for docs/benchmarks.md comes with its own baseline (this
// machine's load varies). Then, tuned the same, 1 replica of the Python and
// of the Ruby worker image running the stock noop handler in the foreign
// language: the cost of the FFI round trip and the interpreter per step,
// against the native 1-replica figure of this run.
func throughput(t *testing.T, ns string) {
	const n = 20000
	tuned := func(name, image string) *v1.WorkerPool {
		wp := workerPool(ns, name, name)
		if image != "" {
			wp = foreignPool(ns, name, name, image)
		}
		wp.Spec.Replicas = ptr(int32(3))
		wp.Spec.Queue.BatchSize, wp.Spec.Queue.PollInterval = 50, "250ms"
		wp.Spec.Dispatch = v1.DispatchSpec{MaxConcurrentHandlers: 64, CompletionBufferSize: 2000, DispatchBufferSize: 500}
		return wp
	}
	rate := func(wp *v1.WorkerPool, replicas int32) float64 {
		name := wp.Name
		wp.Spec.Replicas = ptr(replicas)
		kubectlApply(t, e.poolManifest(t, wp))
		kubectl(t, "scale", "wp", name, "-n", ns, fmt.Sprintf("--replicas=%d", replicas))
		e.waitPool(t, ns, name, fmt.Sprintf("%d ready replicas", replicas), 3*time.Minute, func(w *v1.WorkerPool) bool {
			return ready(w) && w.Status.ReadyReplicas == replicas && w.Status.Replicas == replicas
		})
		before := e.completed(t, name)
		// All visible at once, 5 s after the insert began: the clock starts
		// then (at the latest), so the inserts are not timed.
		start := time.Now().Add(5 * time.Second)
		e.enqueueDelayed(t, name, n, 5*time.Second)
		e.waitDrained(t, name, before+n, 5*time.Minute)
		took := time.Since(start)
		r := n / took.Seconds()
		t.Logf("%s, %d replica(s): %d noop steps in %s: %.0f steps/s", name, replicas, n, took.Round(10*time.Millisecond), r)
		return r
	}
	native := tuned("throughput", "")
	three := rate(native, 3)
	one := rate(native, 1)
	t.Logf("throughput: 3 replicas %.0f steps/s, 1 replica %.0f steps/s, ratio %.2f", three, one, three/one)
	kubectl(t, "delete", "wp", "throughput", "-n", ns, "--wait=true", "--timeout=2m")
	// Each language in a pool of its own, started at 1 replica and gone
	// before the next: no pod of another pool drains meanwhile.
	alone := func(name, image string) float64 {
		r := rate(tuned(name, image), 1)
		kubectl(t, "delete", "wp", name, "-n", ns, "--wait=true", "--timeout=2m")
		return r
	}
	native1 := alone("throughput-native", "")
	python := alone("throughput-python", e.pythonImage)
	ruby := alone("throughput-ruby", e.rubyImage)
	t.Logf("throughput, 1 replica each: native %.0f steps/s, Python %.0f steps/s (%.2f of native), Ruby %.0f steps/s (%.2f of native)",
		native1, python, python/native1, ruby, ruby/native1)
	if three <= 0 || one <= 0 || native1 <= 0 || python <= 0 || ruby <= 0 {
		t.Fatal("no throughput measured")
	}
}

// upgradeAndUninstall: helm upgrade changes the operator's flags and keeps
// it working; helm uninstall removes every operator object but keeps the
// CRD (and so the pools) by design.
func upgradeAndUninstall(t *testing.T, ns string) {
	e.helmCmd(t, "upgrade", release, chartDir, "--namespace", operatorNS, "--reuse-values",
		"--set", "manager.statusInterval=3s", "--wait", "--timeout", "3m")
	args := kubectl(t, "get", "deploy", "-n", operatorNS, "-l", "app.kubernetes.io/instance="+release, "-o", "jsonpath={.items[0].spec.template.spec.containers[0].args}")
	if !strings.Contains(args, "--status-interval=3s") {
		t.Errorf("upgrade did not change the operator's args: %s", args)
	}
	// The operator still reconciles after the upgrade.
	kubectl(t, "patch", "wp", "tunable", "-n", ns, "--type=merge", "-p", `{"spec":{"replicas":2}}`)
	e.waitPool(t, ns, "tunable", "scaled to 2 after upgrade", 3*time.Minute, func(w *v1.WorkerPool) bool {
		return ready(w) && w.Status.ReadyReplicas == 2 && w.Status.Replicas == 2
	})

	e.helmCmd(t, "uninstall", release, "--namespace", operatorNS, "--wait", "--timeout", "3m")
	sel := "app.kubernetes.io/instance=" + release
	for _, kind := range []string{"deployments", "serviceaccounts", "services", "roles", "rolebindings", "configmaps"} {
		eventually(t, "no "+kind+" left in "+operatorNS, time.Minute, func() (bool, string) {
			out, err := run(t, "kubectl", "get", kind, "-n", operatorNS, "-l", sel, "-o", "name")
			return err == nil && strings.TrimSpace(out) == "", out
		})
	}
	for _, kind := range []string{"clusterroles", "clusterrolebindings"} {
		out := kubectl(t, "get", kind, "-l", sel, "-o", "name")
		if strings.TrimSpace(out) != "" {
			t.Errorf("left behind after uninstall: %s", out)
		}
	}
	if err := e.k8s.Get(context.Background(), client.ObjectKey{Name: "workerpools.workers.tasker.dev"}, &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"}}); apierrors.IsNotFound(err) {
		t.Error("helm uninstall removed the CRD (and with it every pool); resource-policy keep should keep it")
	}
}

// stalled: an image that cannot be pulled, a missing Secret and a command
// that exits each make the pool Stalled, with the pod and the cause named
// in kubectl describe, within 30 s of the pod showing it; kstatus says
// Failed. Once fixed, kubectl wait --for=condition=Ready passes and kstatus
// says Current.
func stalled(t *testing.T, ns string) {
	repo, tag := splitImage(e.workerImage)
	for _, tc := range []struct {
		name, podReason, reason string
		mentions                []string
		break_, fix             func(*v1.WorkerPool)
	}{
		{
			name: "no-image", podReason: "ErrImageNeverPull", reason: v1.ReasonImagePullFailed,
			mentions: []string{`image "` + repo + `:no-such-tag" cannot be pulled`, "ErrImageNeverPull"},
			break_:   func(w *v1.WorkerPool) { w.Spec.Image = repo + ":no-such-tag" },
			fix:      func(w *v1.WorkerPool) { w.Spec.Image = repo + ":" + tag },
		},
		{
			name: "no-secret", podReason: "CreateContainerConfigError", reason: v1.ReasonConfigError,
			mentions: []string{"CreateContainerConfigError", `secret "missing-db" not found`},
			break_:   func(w *v1.WorkerPool) { w.Spec.Queue.DatabaseSecretRef.Name = "missing-db" },
			fix:      func(w *v1.WorkerPool) { w.Spec.Queue.DatabaseSecretRef.Name = "tasker-db" },
		},
		{
			name: "crashing", podReason: "CrashLoopBackOff", reason: v1.ReasonCrashLoop,
			mentions: []string{"keeps exiting", "last exit code 1"},
			break_:   func(w *v1.WorkerPool) { w.Spec.Args = []string{"run", "--no-such-flag"} },
			fix:      func(w *v1.WorkerPool) { w.Spec.Args = nil },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wp := workerPool(ns, tc.name, "stalled")
			tc.break_(wp)
			kubectlApply(t, e.poolManifest(t, wp))
			var shown time.Time
			eventually(t, "a pod shows "+tc.podReason, 3*time.Minute, func() (bool, string) {
				for _, p := range poolPods(t, ns, tc.name) {
					for _, cs := range p.Status.ContainerStatuses {
						if w := cs.State.Waiting; w != nil && w.Reason == tc.podReason {
							shown = time.Now()
							return true, ""
						}
					}
				}
				return false, summary(e.pool(t, ns, tc.name))
			})
			got := e.waitPool(t, ns, tc.name, "Stalled "+tc.reason, time.Minute, func(w *v1.WorkerPool) bool {
				return w.Status.ObservedGeneration == w.Generation && cond(w, v1.ConditionStalled).Reason == tc.reason
			})
			if took := time.Since(shown); took > 30*time.Second {
				t.Errorf("Stalled %s came %s after the pod showed %s (want within 30s)", tc.reason, took.Round(time.Second), tc.podReason)
			}
			c := cond(got, v1.ConditionStalled)
			if c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "pod "+tc.name+"-") {
				t.Errorf("Stalled does not name the pod: %+v", c)
			}
			out := kubectl(t, "describe", "wp", tc.name, "-n", ns)
			t.Logf("$ kubectl describe wp %s\n%s", tc.name, out)
			for _, want := range append([]string{"Stalled", tc.reason, "pod " + tc.name + "-"}, tc.mentions...) {
				if !strings.Contains(out, want) {
					t.Errorf("kubectl describe wp %s does not say %q", tc.name, want)
				}
			}
			if res := kstatusOf(t, ns, tc.name); res.Status != kstatus.FailedStatus {
				t.Errorf("kstatus %s (%s), want Failed", res.Status, res.Message)
			} else {
				t.Logf("kstatus: %s: %s", res.Status, res.Message)
			}

			tc.fix(wp)
			kubectlApply(t, e.poolManifest(t, wp))
			start := time.Now()
			kubectl(t, "wait", "--for=condition=Ready", "wp/"+tc.name, "-n", ns, "--timeout=3m")
			t.Logf("kubectl wait --for=condition=Ready passed %s after the fix", time.Since(start).Round(100*time.Millisecond))
			got = e.pool(t, ns, tc.name)
			if s := cond(got, v1.ConditionStalled); s.Status != metav1.ConditionFalse {
				t.Errorf("Stalled after the fix: %+v", s)
			}
			if res := kstatusOf(t, ns, tc.name); res.Status != kstatus.CurrentStatus {
				t.Errorf("kstatus after the fix %s (%s), want Current", res.Status, res.Message)
			}
			events := kubectl(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.name="+tc.name, "-o", "jsonpath={.items[*].reason}")
			if !strings.Contains(events, tc.reason) || !strings.Contains(events, "StalledCleared") {
				t.Errorf("events on %s: %q", tc.name, events)
			}
			kubectl(t, "delete", "wp", tc.name, "-n", ns, "--wait=true", "--timeout=2m")
		})
	}
}

// kstatusOf is what kstatus (sigs.k8s.io/cli-utils), as Flux, Argo CD and
// kpt use it, computes for the pool now.
func kstatusOf(t *testing.T, ns, name string) *kstatus.Result {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1.GroupVersion.WithKind("WorkerPool"))
	if err := e.k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		t.Fatal(err)
	}
	res, err := kstatus.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func ptr[T any](v T) *T { return &v }
