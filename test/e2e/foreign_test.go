//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// foreignPool is a pool of foreign handlers on queue q: image (the Python or
// the Ruby worker image) runs its runner, whose stock handlers (noop, echo,
// sleep, fail) are written in that language, on the FFI channel.
func foreignPool(ns, name, q, image string) *v1.WorkerPool {
	wp := workerPool(ns, name, q)
	wp.Spec.Image = image
	wp.Spec.FFI.Enabled = true
	return wp
}

// restarts is the worker container's restart count in each of the pool's pods.
func restarts(t *testing.T, ns, name string) map[string]int32 {
	t.Helper()
	out := map[string]int32{}
	for _, p := range poolPods(t, ns, name) {
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == "worker" {
				out[p.Name] = cs.RestartCount
			}
		}
	}
	return out
}

// foreignFailures: a Python handler that raises fails the step with the
// Python exception (class, message, a backtrace through the handler's file);
// retryable, it is retried and succeeds; permanent, the step is dead at once.
// The pod stays up.
func foreignFailures(t *testing.T, ns string) {
	wp := foreignPool(ns, "python-raises", "pyraise", e.pythonImage)
	kubectlApply(t, e.poolManifest(t, wp))
	e.waitPool(t, ns, "python-raises", "Ready", 3*time.Minute, ready)
	e.enqueue(t, "pyraise", "fail", `{"fail_attempts":1,"message":"flaky upstream"}`, 5)
	e.enqueue(t, "pyraise", "fail", `{"retryable":false,"message":"bad input"}`, 3)
	eventually(t, "5 completed, 3 dead", 3*time.Minute, func() (bool, string) {
		s := e.stats(t, "pyraise")
		return s.Completed == 5 && s.Dead == 3 && s.Ready == 0 && s.Claimed == 0 && s.Scheduled == 0, fmt.Sprintf("%+v", s)
	})
	for _, o := range e.outcomes(t, "pyraise", "fail") {
		python := o.ErrorType == "StockFailure" && strings.Contains(o.Backtrace, "taskerworker/stock.py")
		switch {
		case !python:
			t.Errorf("step %+v: want the Python exception StockFailure with a backtrace through taskerworker/stock.py", o)
		case o.State == "completed" && (o.Attempts != 2 || o.Message != "flaky upstream"):
			t.Errorf("retried step %+v: want done on attempt 2 after the flaky failure", o)
		case o.State == "dead" && (o.Attempts != 1 || o.Message != "bad input"):
			t.Errorf("permanent failure %+v: want dead after one attempt", o)
		}
	}
	for pod, n := range restarts(t, ns, "python-raises") {
		if n != 0 {
			t.Errorf("pod %s restarted %d times: a raising handler must not take the worker down", pod, n)
		}
	}
	kubectl(t, "delete", "wp", "python-raises", "-n", ns, "--wait=true", "--timeout=2m")
}

// foreignTimeouts: under each callback strategy, a Python handler slower
// than the completion timeout has its event timed out by the worker
// (ffi_timeout, retryable: retried until its attempts run out); the late
// result the Python poller then sends is refused without harm; other steps
// keep completing and the pod is not restarted.
func foreignTimeouts(t *testing.T, ns string) {
	strategies := []string{"Blocking", "BlockingWithTimeout", "FireAndForget"}
	for _, s := range strategies {
		name := "timeout-" + strings.ToLower(s)
		wp := foreignPool(ns, name, name, e.pythonImage)
		wp.Spec.FFI = v1.FFISpec{Enabled: true, CompletionTimeout: "3s", StarvationWarningThreshold: "2s", CallbackStrategy: v1.CallbackStrategy(s)}
		if s != "Blocking" {
			wp.Spec.FFI.CallbackTimeout = "1s"
		}
		kubectlApply(t, e.poolManifest(t, wp))
	}
	for _, s := range strategies {
		name := "timeout-" + strings.ToLower(s)
		e.waitPool(t, ns, name, "Ready", 3*time.Minute, ready)
		e.enqueueAttempts(t, name, "sleep", `{"ms":6000}`, 2, 2)
		e.enqueue(t, name, "noop", `{}`, 20)
	}
	for _, s := range strategies {
		name := "timeout-" + strings.ToLower(s)
		t.Run(s, func(t *testing.T) {
			eventually(t, "20 completed, 2 dead", 3*time.Minute, func() (bool, string) {
				st := e.stats(t, name)
				return st.Completed == 20 && st.Dead == 2 && st.Ready == 0 && st.Claimed == 0 && st.Scheduled == 0, fmt.Sprintf("%+v", st)
			})
			for _, o := range e.outcomes(t, name, "sleep") {
				if o.State != "dead" || o.ErrorType != "ffi_timeout" || o.Attempts != 2 {
					t.Errorf("slow step %+v: want dead as ffi_timeout after its 2 attempts", o)
				}
			}
			logs := kubectl(t, "logs", "-n", ns, "-l", v1.PoolLabel+"="+name, "-c", "worker", "--tail=-1")
			if !strings.Contains(logs, "refused") {
				t.Errorf("the Python poller logged no refused late completion:\n%s", logs)
			}
			for pod, n := range restarts(t, ns, name) {
				if n != 0 {
					t.Errorf("pod %s restarted %d times under %s", pod, n, s)
				}
			}
			out := kubectl(t, "get", "configmap", "-n", ns, "-l", v1.PoolLabel+"="+name, "-o", "jsonpath={.items[*].data}")
			if !strings.Contains(out, "callback_strategy = '"+s+"'") {
				t.Errorf("worker.toml of %s does not carry callback_strategy %s: %s", name, s, out)
			}
		})
	}
	for _, s := range strategies {
		kubectl(t, "delete", "wp", "timeout-"+strings.ToLower(s), "-n", ns, "--wait=true", "--timeout=2m")
	}
}

// killedPoller: the Python process of a pod (the poller threads and the
// worker inside it) is killed outright, as the kernel's OOM killer would: the
// kubelet restarts the container in the same pod and no step is lost (the
// steps it held are redelivered once their claims expire). The suite runs on
// the node (make e2e), so it finds the process by its container's cgroup.
func killedPoller(t *testing.T, ns string) {
	wp := foreignPool(ns, "python-killed", "pykilled", e.pythonImage)
	wp.Spec.Queue.VisibilityTimeout = "10s"
	kubectlApply(t, e.poolManifest(t, wp))
	e.waitPool(t, ns, "python-killed", "Ready", 3*time.Minute, ready)
	const n = 100
	e.enqueue(t, "pykilled", "sleep", `{"ms":200}`, n)
	e.waitPool(t, ns, "python-killed", "handlers running", time.Minute, func(w *v1.WorkerPool) bool { return w.Status.Dispatch.InFlight > 0 })
	pods := poolPods(t, ns, "python-killed")
	if len(pods) != 1 {
		t.Fatalf("want one pod, got %d", len(pods))
	}
	pod := pods[0]
	var id string
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == "worker" {
			id = cs.ContainerID[strings.Index(cs.ContainerID, "://")+3:]
		}
	}
	killed := killContainer(t, id)
	t.Logf("killed the worker container's processes %v (pod %s) with %d of %d steps completed", killed, pod.Name,
		e.stats(t, "pykilled").Completed, n)
	eventually(t, "the container restarted in the same pod", 2*time.Minute, func() (bool, string) {
		r := restarts(t, ns, "python-killed")
		return r[pod.Name] >= 1, fmt.Sprint(r)
	})
	s := e.waitDrained(t, "pykilled", n, 4*time.Minute)
	t.Logf("queue after the kill: %+v", s)
	var again int
	for _, o := range e.outcomes(t, "pykilled", "sleep") {
		if o.Attempts > 1 {
			again++
		}
	}
	t.Logf("%d steps were redelivered after the kill", again)
	e.waitPool(t, ns, "python-killed", "Ready again", 3*time.Minute, func(w *v1.WorkerPool) bool { return ready(w) && w.Status.ReadyReplicas == 1 })
	if got := poolPods(t, ns, "python-killed"); len(got) != 1 || got[0].Name != pod.Name {
		t.Errorf("pods after the kill: %v, want the same pod %s restarted", podNames(got), pod.Name)
	}
	kubectl(t, "delete", "wp", "python-killed", "-n", ns, "--wait=true", "--timeout=2m")
}

// killContainer sends SIGKILL to every process of the container (found by
// its id in their cgroup, on this node) and returns their PIDs.
func killContainer(t *testing.T, id string) []int {
	t.Helper()
	if len(id) < 12 {
		t.Fatalf("container id %q", id)
	}
	files, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	var pids []int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(data), "/"+id) {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(filepath.Dir(f)), "%d", &pid); err != nil {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		t.Fatalf("no process of container %s on this node (the suite must run on the node, as root: make e2e)", id)
	}
	return pids
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}
