//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/yaml"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// env is what hack/e2e.sh hands the suite.
type env struct {
	operatorImage, workerImage string // repository:tag, imported into the node
	pythonImage, rubyImage     string // the foreign-handler worker images, imported into the node
	pauseImage                 string // a container that only waits, imported into the node
	databaseURL                string // reachable from pods and from this host
	helm                       []string
	prometheusBin              string // the Prometheus server pinned in hack/tools
	k8s                        client.Client
	q                          *queue.Queue
	db                         *pgxpool.Pool
}

func mustEnv(name string) string {
	v := os.Getenv(name)
	if v == "" {
		fmt.Fprintf(os.Stderr, "%s is not set: run the suite with `make e2e`\n", name)
		os.Exit(2)
	}
	return v
}

func newEnv(ctx context.Context) (*env, error) {
	e := &env{
		operatorImage: mustEnv("E2E_OPERATOR_IMAGE"),
		workerImage:   mustEnv("E2E_WORKER_IMAGE"),
		pythonImage:   mustEnv("E2E_PYTHON_WORKER_IMAGE"),
		rubyImage:     mustEnv("E2E_RUBY_WORKER_IMAGE"),
		pauseImage:    mustEnv("E2E_PAUSE_IMAGE"),
		databaseURL:   mustEnv("E2E_DATABASE_URL"),
		helm:          strings.Fields(mustEnv("E2E_HELM")),
		prometheusBin: mustEnv("E2E_PROMETHEUS"),
	}
	mustEnv("KUBECONFIG")
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg, err := config.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if e.k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}
	if e.db, err = pgxpool.New(ctx, e.databaseURL); err != nil {
		return nil, fmt.Errorf("queue database: %w", err)
	}
	if err := queue.Migrate(ctx, e.db); err != nil {
		return nil, fmt.Errorf("migrate queue: %w", err)
	}
	if e.q, err = queue.New(e.db, queue.Options{}, nil); err != nil {
		return nil, err
	}
	return e, nil
}

// run runs a command (kubectl, helm) and returns its combined output.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), err
}

func must(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kubectl(t *testing.T, args ...string) string { t.Helper(); return must(t, "kubectl", args...) }

// kubectlApply applies a manifest given as YAML.
func kubectlApply(t *testing.T, manifest []byte) {
	t.Helper()
	cmd := exec.Command("kubectl", "apply", "-f", "-")
	cmd.Stdin = bytes.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

func (e *env) helmCmd(t *testing.T, args ...string) string {
	t.Helper()
	return must(t, e.helm[0], append(e.helm[1:], args...)...)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	start := time.Now()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			t.Logf("%s after %s", what, time.Since(start).Round(100*time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last state: %s", what, timeout, state)
		}
		<-tick.C
	}
}

func (e *env) pool(t *testing.T, ns, name string) *v1.WorkerPool {
	t.Helper()
	wp := &v1.WorkerPool{}
	if err := e.k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, wp); err != nil {
		t.Fatal(err)
	}
	return wp
}

func cond(wp *v1.WorkerPool, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(wp.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{Type: typ, Status: "absent"}
}

// waitPool waits until the pool satisfies ok.
func (e *env) waitPool(t *testing.T, ns, name, what string, timeout time.Duration, ok func(*v1.WorkerPool) bool) *v1.WorkerPool {
	t.Helper()
	var wp *v1.WorkerPool
	eventually(t, name+": "+what, timeout, func() (bool, string) {
		wp = e.pool(t, ns, name)
		return ok(wp), summary(wp)
	})
	return wp
}

func summary(wp *v1.WorkerPool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "gen %d/%d ready %d/%d inFlight %d/%d sat %d%% pending %d oldest %q;", wp.Status.ObservedGeneration, wp.Generation,
		wp.Status.ReadyReplicas, wp.Status.Replicas, wp.Status.Dispatch.InFlight, wp.Status.Dispatch.Capacity,
		wp.Status.Dispatch.CompletionSaturationPercent, wp.Status.FFI.PendingEvents, wp.Status.FFI.OldestPendingAge)
	for _, c := range wp.Status.Conditions {
		fmt.Fprintf(&b, " %s=%s(%s: %s)", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

// enqueue adds n steps of handler with payload to queue.
func (e *env) enqueue(t *testing.T, queueName, handler, payload string, n int) {
	t.Helper()
	steps := make([]queue.NewStep, n)
	for i := range steps {
		steps[i] = queue.NewStep{Queue: queueName, Handler: handler, Payload: []byte(payload)}
	}
	if _, err := e.q.Enqueue(context.Background(), steps); err != nil {
		t.Fatal(err)
	}
}

// enqueueAttempts adds n steps that get at most maxAttempts attempts.
func (e *env) enqueueAttempts(t *testing.T, queueName, handler, payload string, n, maxAttempts int) {
	t.Helper()
	steps := make([]queue.NewStep, n)
	for i := range steps {
		steps[i] = queue.NewStep{Queue: queueName, Handler: handler, Payload: []byte(payload), MaxAttempts: maxAttempts}
	}
	if _, err := e.q.Enqueue(context.Background(), steps); err != nil {
		t.Fatal(err)
	}
}

// stepOutcome is what became of a step: its state, attempts, result value
// and last error, as the queue table has them.
type stepOutcome struct {
	State, Result, ErrorType, Message, Backtrace string
	Attempts                                     int
}

// outcomes are the outcomes of queueName's steps of handler, oldest first.
func (e *env) outcomes(t *testing.T, queueName, handler string) []stepOutcome {
	t.Helper()
	rows, err := e.db.Query(context.Background(), `
SELECT state::text, attempts, coalesce((result->'result')::text, ''),
	coalesce(last_error->'error'->>'error_type', ''), coalesce(last_error->'error'->>'message', ''),
	coalesce((last_error->'error'->'backtrace')::text, '')
FROM tasker_steps WHERE queue = $1 AND handler = $2 ORDER BY id`, queueName, handler)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []stepOutcome
	for rows.Next() {
		var o stepOutcome
		if err := rows.Scan(&o.State, &o.Attempts, &o.Result, &o.ErrorType, &o.Message, &o.Backtrace); err != nil {
			t.Fatal(err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// enqueueDelayed adds n noop steps that become visible together after
// delay, so a throughput measurement does not time the inserts.
func (e *env) enqueueDelayed(t *testing.T, queueName string, n int, delay time.Duration) {
	t.Helper()
	steps := make([]queue.NewStep, n)
	for i := range steps {
		steps[i] = queue.NewStep{Queue: queueName, Handler: "noop", Payload: []byte(`{}`), Delay: delay}
	}
	start := time.Now()
	if _, err := e.q.Enqueue(context.Background(), steps); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > delay {
		t.Fatalf("enqueueing %d steps took %s, longer than their %s delay: the measurement would include it", n, time.Since(start), delay)
	}
}

// stats are queueName's step counts now.
func (e *env) stats(t *testing.T, queueName string) queue.QueueStats {
	t.Helper()
	all, err := e.q.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return all[queueName]
}

// completed is how many steps of queueName are completed so far.
func (e *env) completed(t *testing.T, queueName string) int64 {
	t.Helper()
	all, err := e.q.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return all[queueName].Completed
}

// waitDrained waits until queueName has completed want steps and nothing
// is left ready, claimed or dead.
func (e *env) waitDrained(t *testing.T, queueName string, want int64, timeout time.Duration) queue.QueueStats {
	t.Helper()
	var s queue.QueueStats
	eventually(t, queueName+" drained", timeout, func() (bool, string) {
		all, err := e.q.Stats(context.Background())
		if err != nil {
			return false, err.Error()
		}
		s = all[queueName]
		return s.Completed == want && s.Ready == 0 && s.Claimed == 0 && s.Scheduled == 0, fmt.Sprintf("%+v", s)
	})
	if s.Dead != 0 {
		t.Fatalf("%s: %d dead steps", queueName, s.Dead)
	}
	return s
}

// poolManifest is a pool running the worker image, as YAML for kubectl.
func (e *env) poolManifest(t *testing.T, wp *v1.WorkerPool) []byte {
	t.Helper()
	wp.APIVersion, wp.Kind = v1.GroupVersion.String(), "WorkerPool"
	data, err := yaml.Marshal(wp)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// dump prints what a failing test needs: the pools, events and logs.
func dump(t *testing.T, namespaces ...string) {
	for _, ns := range namespaces {
		for _, args := range [][]string{
			{"get", "wp,deploy,pods", "-n", ns, "-o", "wide"},
			{"describe", "wp", "-n", ns},
			{"get", "events", "-n", ns, "--sort-by=.lastTimestamp"},
			{"logs", "-n", ns, "-l", v1.PoolLabel, "--tail=60", "--prefix", "--all-containers"},
		} {
			out, _ := run(t, "kubectl", args...)
			t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
		}
	}
	out, _ := run(t, "kubectl", "logs", "-n", operatorNS, "-l", "app.kubernetes.io/name=workerpool-operator", "--tail=200", "--prefix")
	t.Logf("operator logs:\n%s", out)
}

func dbSecret(ns, url string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tasker-db", Namespace: ns}, StringData: map[string]string{"url": url}}
}
