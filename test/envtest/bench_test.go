package envtest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// benchPools is how many pools BenchmarkReconcile1000Pools creates.
const benchPools = 1000

// BenchmarkReconcile1000Pools runs the real operator binary (cmd/manager,
// production settings) against the envtest API server, creates 1 000
// WorkerPools and measures the time until every pool has its children and
// a status for its generation. The baseline, measured in the same run, is
// the same API writes (ConfigMap, Deployment, Service, status) made
// directly by a client with the operator's concurrency, so the ratio is
// the operator's own overhead. Run with -benchtime=1x.
func BenchmarkReconcile1000Pools(b *testing.B) {
	bin := managerBinary(b)
	kubeconfig := benchKubeconfig(b)
	c := rest.CopyConfig(cfg)
	c.QPS = -1 // no client-side limit for the load generator
	fast, err := client.New(c, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	var operatorSecs, baseSecs, rssMiB, peakMiB, idleWrites float64
	var perPool operatorCounts // API requests and passes per pool, creation to steady state
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := fmt.Sprintf("%s-%d-%d", benchNS, time.Now().Unix()%100000, i)
		baseNS := ns + "-base"
		for _, n := range []string{ns, baseNS} {
			if err := fast.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
				b.Fatal(err)
			}
		}
		baseSecs += bareWrites(b, fast, baseNS).Seconds()

		op := startManager(b, bin, kubeconfig, ns)
		b.StartTimer()
		start := time.Now()
		parallel(b, benchPools, 16, func(j int) error {
			wp := minimal(fmt.Sprintf("pool-%04d", j))
			wp.Namespace = ns
			return fast.Create(context.Background(), wp)
		})
		waitSteadyState(b, fast, ns)
		operatorSecs += time.Since(start).Seconds()
		b.StopTimer()
		c := op.scrape(b)
		perPool.reconciles += c.reconciles / benchPools
		perPool.writes += c.writes / benchPools
		perPool.reads += c.reads / benchPools
		idleWrites += op.idlePassWrites(b)
		rss, peak := op.memory(b)
		rssMiB, peakMiB = rssMiB+rss, peakMiB+peak
		op.stop(b)
	}
	n := float64(b.N)
	b.ReportMetric(operatorSecs/n, "s/1000pools")
	b.ReportMetric(baseSecs/n, "baseline-s")
	b.ReportMetric(operatorSecs/baseSecs, "ratio")
	b.ReportMetric(rssMiB/n, "operator-rss-MiB")
	b.ReportMetric(peakMiB/n, "operator-peak-rss-MiB")
	b.ReportMetric(idleWrites/n, "idle-pass-api-writes")
	b.ReportMetric(perPool.writes/n, "api-writes/pool")
	b.ReportMetric(perPool.reads/n, "api-reads/pool")
	b.ReportMetric(perPool.reconciles/n, "passes/pool")
}

// waitSteadyState waits until every pool in ns has a status for its
// generation (with a Ready condition) and a Deployment.
func waitSteadyState(b *testing.B, c client.Client, ns string) {
	deadline := time.Now().Add(5 * time.Minute)
	tick := time.NewTicker(200 * time.Millisecond) // polling interval of the measurement, not a wait for an event
	defer tick.Stop()
	for {
		pools := &v1.WorkerPoolList{}
		deps := &appsv1.DeploymentList{}
		if err := c.List(context.Background(), pools, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		if err := c.List(context.Background(), deps, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		done := 0
		for _, p := range pools.Items {
			if p.Status.ObservedGeneration == p.Generation && condition(&p, v1.ConditionReady).Status != "absent" {
				done++
			}
		}
		if done == benchPools && len(deps.Items) == benchPools {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("steady state not reached: %d pools with status, %d Deployments", done, len(deps.Items))
		}
		<-tick.C
	}
}

// bareWrites makes the writes the operator makes for benchPools pools,
// directly, with the operator's default concurrency (4 reconcilers).
func bareWrites(b *testing.B, c client.Client, ns string) time.Duration {
	start := time.Now()
	parallel(b, benchPools, 16, func(j int) error {
		wp := minimal(fmt.Sprintf("pool-%04d", j))
		wp.Namespace = ns
		return c.Create(context.Background(), wp)
	})
	parallel(b, benchPools, 4, func(j int) error {
		name := fmt.Sprintf("pool-%04d", j)
		labels := map[string]string{v1.PoolLabel: name}
		objs := []client.Object{
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name + "-config", Namespace: ns, Labels: labels}, Data: map[string]string{"worker.toml": "x"}},
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels}, Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "tasker-worker:dev"}}}}}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels}, Spec: corev1.ServiceSpec{
				ClusterIP: corev1.ClusterIPNone, Selector: labels, Ports: []corev1.ServicePort{{Name: "metrics", Port: 9090}}}},
		}
		for _, o := range objs {
			if err := c.Create(context.Background(), o); err != nil {
				return err
			}
		}
		wp := &v1.WorkerPool{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, wp); err != nil {
			return err
		}
		wp.Status.ObservedGeneration = wp.Generation
		wp.Status.Conditions = []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: "Bench", LastTransitionTime: metav1.Now()}}
		return c.Status().Update(context.Background(), wp)
	})
	return time.Since(start)
}

// parallel runs fn(0..n-1) on workers goroutines and fails on the first error.
func parallel(b *testing.B, n, workers int, fn func(int) error) {
	jobs := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				if err := fn(j); err != nil {
					errs <- err
				}
			}
		})
	}
	for j := range n {
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// managerBinary is $MANAGER_BIN (make builds bin/manager) or a fresh build.
func managerBinary(b *testing.B) string {
	if bin := os.Getenv("MANAGER_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(b.TempDir(), "manager")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/manager").CombinedOutput(); err != nil {
		b.Fatalf("build manager: %v\n%s", err, out)
	}
	return bin
}

// benchKubeconfig writes a kubeconfig for an admin user of the test API server.
func benchKubeconfig(b *testing.B) string {
	user, err := testEnv.AddUser(envtest.User{Name: "bench-operator", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

type managerProc struct {
	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan struct{}
	metrics string // the operator's /metrics URL
}

// idlePassWrites lets every pool, unchanged since steady state, pass
// through reconcile once more (one status interval) and counts the API
// writes the operator made meanwhile: an idle pool should cost none (no
// child rewritten, no status written before the heartbeat).
func (p *managerProc) idlePassWrites(b *testing.B) float64 {
	before := p.scrape(b)
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(500 * time.Millisecond) // polling interval of the measurement, not a wait for an event
	defer tick.Stop()
	for {
		now := p.scrape(b)
		if now.reconciles >= before.reconciles+benchPools {
			return now.writes - before.writes
		}
		if time.Now().After(deadline) {
			b.Fatalf("pools did not pass through reconcile again: %v passes, %v before", now.reconciles, before.reconciles)
		}
		<-tick.C
	}
}

type operatorCounts struct{ reconciles, writes, reads float64 }

// scrape reads the reconcile passes (workerpool_reconciles_total), the API
// writes (rest_client_requests_total, methods other than GET) and the API
// reads (GET: single objects past the cache; the informers' lists and
// watches too) from the operator's metrics.
func (p *managerProc) scrape(b *testing.B) operatorCounts {
	resp, err := http.Get(p.metrics)
	if err != nil {
		b.Fatalf("operator metrics: %v", err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		b.Fatalf("operator metrics: %v", err)
	}
	var c operatorCounts
	for _, m := range families["workerpool_reconciles_total"].GetMetric() {
		c.reconciles += m.GetCounter().GetValue()
	}
	for _, m := range families["rest_client_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			switch {
			case l.GetName() != "method":
			case l.GetValue() == "GET":
				c.reads += m.GetCounter().GetValue()
			default:
				c.writes += m.GetCounter().GetValue()
			}
		}
	}
	return c
}

func startManager(b *testing.B, bin, kubeconfig, ns string) *managerProc {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	_ = l.Close()
	cmd := exec.Command(bin, "--watch-namespaces="+ns, "--metrics-bind-address="+metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address=0", "--status-interval=15s", "--zap-log-level=error")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	p := &managerProc{cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{}), metrics: "http://" + metricsAddr + "/metrics"}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// memory returns the operator's resident set and its peak, in MiB.
func (p *managerProc) memory(b *testing.B) (rss, peak float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak
}

// stop sends SIGTERM and waits for a clean exit.
func (p *managerProc) stop(b *testing.B) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		b.Fatalf("operator did not stop on SIGTERM:\n%s", p.out.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		b.Fatalf("operator exited %d:\n%s", code, p.out.String())
	}
}
