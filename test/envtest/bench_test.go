package envtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/controllers"
	"github.com/seed-a17b38e7/workerpool-operator/internal/memlimit"
)

// benchReconcilers is the manager's default --max-concurrent-reconciles: the
// baseline writes with the concurrency the operator runs with.
const benchReconcilers = 4

// BenchmarkReconcile1000Pools runs the real operator binary (cmd/manager,
// production settings) against the envtest API server, creates 1 000
// WorkerPools and measures the time until every pool has its children and
// a status for its generation. The baseline, measured in the same run
// before and after the operator's, is the same API writes (ConfigMap,
// Deployment, Service, status) made directly by a client with the
// operator's concurrency; the ratio to their mean is the operator's own
// overhead. Run with -benchtime=1x.
func BenchmarkReconcile1000Pools(b *testing.B) { benchReconcile(b, 1000) }

// BenchmarkReconcile10000Pools is the same at 10 000 pools.
func BenchmarkReconcile10000Pools(b *testing.B) { benchReconcile(b, 10000) }

func benchReconcile(b *testing.B, benchPools int) {
	bin := managerBinary(b)
	kubeconfig := benchKubeconfig(b)
	c := rest.CopyConfig(cfg)
	c.QPS = -1 // no client-side limit for the load generator
	fast, err := client.New(c, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	var operatorSecs, baseSecs, baseAfterSecs, rssMiB, peakMiB, heapMiB, idleWrites, restartSecs, restartPeakMiB float64
	var perPool operatorCounts // API requests and passes per pool, creation to steady state
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := fmt.Sprintf("%s-%d-%d", benchNS, time.Now().Unix()%100000, i)
		baseNS, afterNS := ns+"-base", ns+"-base-after"
		for _, n := range []string{ns, baseNS, afterNS} {
			if err := fast.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
				b.Fatal(err)
			}
		}
		watch := watchSteadyState(b, baseNS, benchPools)
		start := time.Now()
		bareWrites(b, fast, baseNS, benchPools)
		watch.wait(b)
		baseSecs += time.Since(start).Seconds()

		watch = watchSteadyState(b, ns, benchPools)
		op := startManager(b, bin, kubeconfig, ns)
		b.StartTimer()
		start = time.Now()
		profiled := op.cpuProfile(b, benchPools)
		parallel(b, benchPools, 16, func(j int) error {
			wp := minimal(fmt.Sprintf("pool-%04d", j))
			wp.Namespace = ns
			return fast.Create(context.Background(), wp)
		})
		watch.wait(b)
		operatorSecs += time.Since(start).Seconds()
		b.StopTimer()
		<-profiled
		c := op.scrape(b)
		perPool.reconciles += c.reconciles / float64(benchPools)
		perPool.writes += c.writes / float64(benchPools)
		perPool.reads += c.reads / float64(benchPools)
		idleWrites += op.idlePassWrites(b, benchPools)
		rss, peak := op.memory(b)
		rssMiB, peakMiB = rssMiB+rss, peakMiB+peak
		heapMiB += op.scrape(b).heapInuse / (1 << 20)
		op.heapProfile(b, benchPools)
		op.stop(b)

		// Restart: a new operator process finds every pool and its children
		// in place; the clock stops when it has passed over every pool once.
		start = time.Now()
		op = startManager(b, bin, kubeconfig, ns)
		op.waitPasses(b, float64(benchPools), time.Duration(benchPools)*100*time.Millisecond)
		restartSecs += time.Since(start).Seconds()
		_, peak = op.memory(b)
		restartPeakMiB += peak
		op.stop(b)

		// The baseline again, after the operator's run: each run leaves its
		// objects in etcd and in the API server's watch cache, so a later run
		// meets a larger store than an earlier one. Comparing the operator
		// with the mean of a baseline before and one after it takes that
		// drift out of the ratio.
		watch = watchSteadyState(b, afterNS, benchPools)
		start = time.Now()
		bareWrites(b, fast, afterNS, benchPools)
		watch.wait(b)
		baseAfterSecs += time.Since(start).Seconds()
	}
	n := float64(b.N)
	b.ReportMetric(operatorSecs/n, fmt.Sprintf("s/%dpools", benchPools))
	b.ReportMetric(baseSecs/n, "baseline-before-s")
	b.ReportMetric(baseAfterSecs/n, "baseline-after-s")
	b.ReportMetric(operatorSecs/((baseSecs+baseAfterSecs)/2), "ratio")
	b.ReportMetric(float64(benchMemoryLimit(b)>>20), "memory-limit-MiB")
	b.ReportMetric(rssMiB/n, "operator-rss-MiB")
	b.ReportMetric(peakMiB/n, "operator-peak-rss-MiB")
	b.ReportMetric(heapMiB/n, "operator-heap-inuse-MiB")
	b.ReportMetric(idleWrites/n, "idle-pass-api-writes")
	b.ReportMetric(restartSecs/n, "restart-s")
	b.ReportMetric(restartPeakMiB/n, "restart-peak-rss-MiB")
	b.ReportMetric(perPool.writes/n, "api-writes/pool")
	b.ReportMetric(perPool.reads/n, "api-reads/pool")
	b.ReportMetric(perPool.reconciles/n, "passes/pool")
}

// steadyWatch follows the pools and Deployments of a namespace through
// informers of its own, so that both runs of the benchmark (the operator's
// and the baseline's) end alike: when it has seen every pool with a status
// for its generation and a Deployment. It counts as the events come, at a
// small and equal cost per event in both runs: listing 10 000 pools every
// tick instead (from the API server, or copied out of a cache) cost the
// measuring process more CPU time the longer a run took, on the machine
// the runs are timed on.
type steadyWatch struct {
	cancel  context.CancelFunc
	mu      sync.Mutex
	settled map[string]bool // pools with a status for their generation
	deps    map[string]bool // Deployments
	want    int
	done    chan struct{} // closed when both reach want
}

func watchSteadyState(b *testing.B, ns string, benchPools int) *steadyWatch {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	w := &steadyWatch{cancel: cancel, settled: map[string]bool{}, deps: map[string]bool{}, want: benchPools, done: make(chan struct{})}
	watched, err := cache.New(cfg, cache.Options{Scheme: scheme.Scheme, DefaultNamespaces: map[string]cache.Config{ns: {}},
		DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		b.Fatal(err)
	}
	dep := &metav1.PartialObjectMetadata{}
	dep.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("Deployment"))
	for _, o := range []client.Object{dep, &v1.WorkerPool{}} { // informers before the cache starts
		inf, err := watched.GetInformer(ctx, o, cache.BlockUntilSynced(false))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { w.saw(obj, false) },
			UpdateFunc: func(_, obj any) { w.saw(obj, false) },
			DeleteFunc: func(obj any) { w.saw(obj, true) },
		}); err != nil {
			b.Fatal(err)
		}
	}
	go func() { _ = watched.Start(ctx) }()
	if !watched.WaitForCacheSync(ctx) {
		b.Fatal("bench cache did not sync")
	}
	return w
}

// saw counts one event of a pool or Deployment.
func (w *steadyWatch) saw(obj any, deleted bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch o := obj.(type) {
	case *v1.WorkerPool:
		if !deleted && o.Status.ObservedGeneration == o.Generation && condition(o, v1.ConditionReady).Status != "absent" {
			w.settled[o.Name] = true
		} else {
			delete(w.settled, o.Name)
		}
	case *metav1.PartialObjectMetadata:
		if deleted {
			delete(w.deps, o.Name)
		} else {
			w.deps[o.Name] = true
		}
	}
	if len(w.settled) == w.want && len(w.deps) == w.want {
		select {
		case <-w.done:
		default:
			close(w.done)
		}
	}
}

// wait waits until every pool has a status for its generation (with a
// Ready condition) and a Deployment, then stops watching.
func (w *steadyWatch) wait(b *testing.B) {
	defer w.cancel()
	timeout := time.Duration(w.want) * 200 * time.Millisecond
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.mu.Lock()
		defer w.mu.Unlock()
		b.Fatalf("steady state not reached in %s: %d pools with status, %d Deployments", timeout, len(w.settled), len(w.deps))
	}
}

// bareWrites makes the operator's writes for benchPools pools directly,
// with the operator's default concurrency (benchReconcilers): it creates the
// pools as the load generator does, then per pool server-side applies the
// children exactly as the operator renders them (controllers'
// RenderApplyRequests: same objects, field manager, owner references and
// hash annotations) and writes the status the operator's first pass
// computes. What it leaves out is the operator's own work: caches and
// watches, reads past the cache, planning, and passes that write nothing.
func bareWrites(b *testing.B, c client.Client, ns string, benchPools int) {
	pools := make([]*v1.WorkerPool, benchPools)
	parallel(b, benchPools, 16, func(j int) error {
		pools[j] = minimal(fmt.Sprintf("pool-%04d", j))
		pools[j].Namespace = ns
		return c.Create(context.Background(), pools[j])
	})
	parallel(b, benchPools, benchReconcilers, func(j int) error {
		wp := pools[j]
		reqs, err := controllers.RenderApplyRequests(wp)
		if err != nil {
			return err
		}
		dep := &appsv1.Deployment{}
		for _, u := range reqs {
			if err := c.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u),
				client.FieldOwner(controllers.FieldOwner), client.ForceOwnership); err != nil {
				return err
			}
			if u.GetKind() == "Deployment" {
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, dep); err != nil {
					return err
				}
			}
		}
		wp.Status = controllers.FirstStatus(wp, dep)
		return c.Status().Update(context.Background(), wp)
	})
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
	pprof   string // the operator's pprof address, if it serves one
}

// freeLocalAddr is a loopback address with a port nobody listens on.
func freeLocalAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// idlePassWrites lets every pool, unchanged since steady state, pass
// through reconcile once more (one status interval) and counts the API
// writes the operator made meanwhile: an idle pool should cost none (no
// child rewritten, no status written before the heartbeat).
func (p *managerProc) idlePassWrites(b *testing.B, benchPools int) float64 {
	before := p.scrape(b)
	now := p.waitPasses(b, before.reconciles+float64(benchPools), 2*time.Minute+time.Duration(benchPools)*10*time.Millisecond)
	return now.writes - before.writes
}

// waitPasses waits until the operator has made passes passes in all (its
// workerpool_reconciles_total) and returns its counts then.
func (p *managerProc) waitPasses(b *testing.B, passes float64, timeout time.Duration) operatorCounts {
	deadline := time.Now().Add(timeout)
	// Every 5 s: at 10 000 pools the page has 160 000 series, and each read
	// costs the operator CPU time the measurement would otherwise include.
	tick := time.NewTicker(5 * time.Second) // polling interval of the measurement, not a wait for an event
	defer tick.Stop()
	for {
		if now, ok := p.tryScrape(); ok && now.reconciles >= passes {
			return now
		}
		if time.Now().After(deadline) {
			now, _ := p.tryScrape()
			b.Fatalf("operator passes: %v, want %v within %s\n%s", now.reconciles, passes, timeout, p.out.String())
		}
		select {
		case <-tick.C:
		case <-p.exited:
			b.Fatalf("operator exited:\n%s", p.out.String())
		}
	}
}

// cpuProfile records the operator's CPU profile over the first
// $BENCH_CPUSECONDS (default 30) seconds of the flood of new pools into
// $BENCH_CPUPROFILE-<pools>pools.pb.gz when BENCH_CPUPROFILE is set. The
// channel is closed when it is written (at once when there is none).
func (p *managerProc) cpuProfile(b *testing.B, benchPools int) <-chan struct{} {
	done := make(chan struct{})
	prefix := os.Getenv("BENCH_CPUPROFILE")
	if prefix == "" {
		close(done)
		return done
	}
	seconds := os.Getenv("BENCH_CPUSECONDS")
	if seconds == "" {
		seconds = "30"
	}
	go func() {
		defer close(done)
		// The operator has just started: wait for its pprof endpoint.
		deadline := time.Now().Add(30 * time.Second)
		tick := time.NewTicker(100 * time.Millisecond) // polling for a listener to come up
		defer tick.Stop()
		for {
			resp, err := http.Get("http://" + p.pprof + "/debug/pprof/")
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				b.Errorf("CPU profile: %v", err)
				return
			}
			<-tick.C
		}
		if err := p.saveProfile("/debug/pprof/profile?seconds="+seconds, fmt.Sprintf("%s-%dpools.pb.gz", prefix, benchPools)); err != nil {
			b.Errorf("CPU profile: %v", err)
		}
	}()
	return done
}

// saveProfile writes what the operator's pprof endpoint path serves to file.
func (p *managerProc) saveProfile(path, file string) error {
	resp, err := http.Get("http://" + p.pprof + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// heapProfile writes the operator's heap profile (after a GC) to
// $BENCH_HEAPPROFILE-<pools>pools.pb.gz when BENCH_HEAPPROFILE is set
// (`go tool pprof -sample_index=inuse_space` reads it).
func (p *managerProc) heapProfile(b *testing.B, benchPools int) {
	if prefix := os.Getenv("BENCH_HEAPPROFILE"); prefix != "" {
		if err := p.saveProfile("/debug/pprof/heap?gc=1", fmt.Sprintf("%s-%dpools.pb.gz", prefix, benchPools)); err != nil {
			b.Fatalf("heap profile: %v", err)
		}
	}
}

type operatorCounts struct{ reconciles, writes, reads, heapInuse float64 }

// scrape reads the reconcile passes (workerpool_reconciles_total), the API
// writes (rest_client_requests_total, methods other than GET) and the API
// reads (GET: single objects past the cache; the informers' lists and
// watches too) from the operator's metrics.
func (p *managerProc) scrape(b *testing.B) operatorCounts {
	c, err := p.counts()
	if err != nil {
		b.Fatalf("operator metrics: %v", err)
	}
	return c
}

// tryScrape is scrape for an operator that may not serve its metrics yet.
func (p *managerProc) tryScrape() (operatorCounts, bool) {
	c, err := p.counts()
	return c, err == nil
}

// counts reads the families it needs line by line: at 10 000 pools the
// operator's page has hundreds of thousands of per-pool series, and decoding
// them all every poll would load the machine the operator is timed on.
func (p *managerProc) counts() (operatorCounts, error) {
	resp, err := http.Get(p.metrics)
	if err != nil {
		return operatorCounts{}, err
	}
	defer resp.Body.Close()
	var c operatorCounts
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		family, _, _ := strings.Cut(line, "{")
		family, _, _ = strings.Cut(family, " ")
		if family != "workerpool_reconciles_total" && family != "rest_client_requests_total" && family != "go_memstats_heap_inuse_bytes" {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return operatorCounts{}, fmt.Errorf("%q: %w", line, err)
		}
		switch {
		case family == "go_memstats_heap_inuse_bytes":
			c.heapInuse = v
		case family == "workerpool_reconciles_total":
			c.reconciles += v
		case strings.Contains(line, `method="GET"`):
			c.reads += v
		default:
			c.writes += v
		}
	}
	return c, sc.Err()
}

func startManager(b *testing.B, bin, kubeconfig, ns string) *managerProc {
	metricsAddr, pprofAddr := freeLocalAddr(b), ""
	args := []string{"--watch-namespaces=" + ns, "--metrics-bind-address=" + metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address=0", "--status-interval=15s", "--zap-log-level=error"}
	if os.Getenv("BENCH_HEAPPROFILE") != "" || os.Getenv("BENCH_CPUPROFILE") != "" {
		pprofAddr = freeLocalAddr(b)
		args = append(args, "--pprof-bind-address="+pprofAddr)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if limit := benchMemoryLimit(b); limit > 0 {
		// What the operator sets itself in a container with this memory
		// limit (memlimit.Set): the benchmark runs it as a plain process,
		// outside any cgroup.
		cmd.Env = append(cmd.Env, fmt.Sprintf("GOMEMLIMIT=%d", memlimit.ForContainer(limit, memlimit.MappedCodeSize(bin))))
	}
	p := &managerProc{cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{}), metrics: "http://" + metricsAddr + "/metrics", pprof: pprofAddr}
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

// benchMemoryLimit is the container memory limit the operator is run as if
// under, in bytes: $BENCH_MEMORY_LIMIT_MIB, default 300 MiB (the operator's
// resident-set goal at 10 000 pools); 0 runs it with no limit at all.
func benchMemoryLimit(b *testing.B) int64 {
	v := os.Getenv("BENCH_MEMORY_LIMIT_MIB")
	if v == "" {
		return 300 << 20
	}
	mib, err := strconv.ParseInt(v, 10, 64)
	if err != nil || mib < 0 {
		b.Fatalf("BENCH_MEMORY_LIMIT_MIB=%q: want a number of MiB, 0 for no limit", v)
	}
	return mib << 20
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
