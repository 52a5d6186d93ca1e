package envtest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/controllers"
)

// isolated is the reconciler as the manager wires it (the manager's client,
// cache and indexes), watching a namespace of its own, with no controller
// running it: a test calls Reconcile itself and sees each pass's result
// and requests.
type isolated struct {
	r        *controllers.WorkerPoolReconciler
	ns       string
	cache    client.Reader
	requests *requestLog
}

func newIsolated(t *testing.T) *isolated {
	t.Helper()
	ns := fmt.Sprintf("isolated-%d", time.Now().UnixNano()%1e9)
	if err := k8s.Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	log := &requestLog{}
	c := rest.CopyConfig(cfg)
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper { return log.wrap(rt) })
	mgr, err := manager.New(c, manager.Options{
		Scheme: scheme.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache:      controllers.CacheOptions([]string{ns}),
		Controller: config.Controller{SkipNameValidation: ptr(true)}, // the suite's operator has this name too
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &controllers.WorkerPoolReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Scraper: controllers.NewScraper(scrapeTimeout, 4), StatusInterval: time.Minute}
	if err := r.SetupWithManager(mgr, 1); err != nil { // indexes the cache; the controller is never started
		t.Fatal(err)
	}
	go func() { _ = mgr.GetCache().Start(ctx(t)) }()
	if !mgr.GetCache().WaitForCacheSync(ctx(t)) {
		t.Fatal("cache did not sync")
	}
	// Start the informers the controller would start with the manager (an
	// informer otherwise starts, with a list, at its first read).
	for _, list := range []client.ObjectList{&v1.WorkerPoolList{}, &corev1.ConfigMapList{}, &appsv1.DeploymentList{},
		&corev1.ServiceList{}, &policyv1.PodDisruptionBudgetList{}, &corev1.PodList{}, &appsv1.ReplicaSetList{}} {
		if err := mgr.GetClient().List(ctx(t), list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
	}
	return &isolated{r: r, ns: ns, cache: mgr.GetClient(), requests: log}
}

// createPool creates a minimal pool and waits until the cache holds it.
func (i *isolated) createPool(t *testing.T, name string) reconcile.Request {
	t.Helper()
	wp := minimal(name)
	wp.Namespace = i.ns
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cache holds the pool", 20*time.Second, func() (bool, string) {
		err := i.cache.Get(context.Background(), keyOf(wp), &v1.WorkerPool{})
		return err == nil, fmt.Sprint(err)
	})
	return reconcile.Request{NamespacedName: keyOf(wp)}
}

// requestLog records the API requests made through a rest config, as
// "METHOD path".
type requestLog struct {
	mu   sync.Mutex
	seen []string
}

func (l *requestLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		l.mu.Lock()
		l.seen = append(l.seen, req.Method+" "+req.URL.Path)
		l.mu.Unlock()
		return rt.RoundTrip(req)
	})
}

// since returns the requests made after the first n, and their count.
func (l *requestLog) since(n int) ([]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.seen[n:]...), len(l.seen)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A new pool costs one request per child and one status write: a child
// missing from the cache is created by an apply that only creates (refused
// if anything holds the name), not after a read past the cache.
func TestNewPoolCostsOneRequestPerChild(t *testing.T) {
	iso := newIsolated(t)
	req := iso.createPool(t, "new")
	_, n := iso.requests.since(0)
	if _, err := iso.r.Reconcile(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	seen, _ := iso.requests.since(n)
	var reads, applies, statusWrites []string
	for _, r := range seen {
		switch method, path, _ := strings.Cut(r, " "); {
		case method == http.MethodGet && !strings.Contains(path, "/watch"):
			reads = append(reads, r)
		case method == http.MethodPatch:
			applies = append(applies, r)
		case method == http.MethodPut && strings.HasSuffix(path, "/status"):
			statusWrites = append(statusWrites, r)
		}
	}
	if len(reads) != 0 || len(applies) != 3 || len(statusWrites) != 1 {
		t.Fatalf("a new pool's first pass made %d reads %v, %d applies %v, %d status writes; want 0, 3 (ConfigMap, Deployment, Service), 1",
			len(reads), reads, len(applies), applies, len(statusWrites))
	}
}

// A child of the pool that the cache does not hold (here: someone removed
// the label the cache selects on) holds its name: the create-only apply is
// refused, the operator finds the child is the pool's, and applies it again
// as usual, labels included.
func TestOwnChildMissingFromTheCacheIsAppliedAgain(t *testing.T) {
	iso := newIsolated(t)
	req := iso.createPool(t, "unlabelled")
	if _, err := iso.r.Reconcile(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{}
	if err := k8s.Get(ctx(t), req.NamespacedName, svc); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"metadata":{"labels":{"app.kubernetes.io/managed-by":null}}}`)
	if err := k8s.Patch(ctx(t), svc, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cache drops the unlabelled Service", 20*time.Second, func() (bool, string) {
		err := iso.cache.Get(context.Background(), req.NamespacedName, &corev1.Service{})
		return err != nil, fmt.Sprint(err)
	})
	if _, err := iso.r.Reconcile(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Get(ctx(t), req.NamespacedName, svc); err != nil {
		t.Fatal(err)
	}
	if svc.Labels["app.kubernetes.io/managed-by"] != "workerpool-operator" {
		t.Fatalf("the pool's Service was not applied again: labels %v", svc.Labels)
	}
	wp := &v1.WorkerPool{}
	if err := k8s.Get(ctx(t), req.NamespacedName, wp); err != nil {
		t.Fatal(err)
	}
	if c := condition(wp, v1.ConditionStalled); c.Status != metav1.ConditionFalse {
		t.Fatalf("Stalled %s/%s: %s", c.Status, c.Reason, c.Message)
	}
}

// A pool's periodic status refresh waits behind new and changed pools: when
// thousands of refreshes are due at once (after a restart, or while a flood
// of pools is created), a new pool is not served after all of them. The
// queue is controller-runtime's priority queue, which the manager's
// controller uses by default, fed as the controller feeds it.
func TestPeriodicRefreshYieldsToNewPools(t *testing.T) {
	iso := newIsolated(t)
	req := iso.createPool(t, "steady")
	res, err := iso.r.Reconcile(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != time.Minute || res.Priority == nil {
		t.Fatalf("pass result %+v: want the refresh after the status interval, with its own priority", res)
	}

	q := priorityqueue.New[reconcile.Request]("refresh-order")
	defer q.ShutDown()
	// The controller requeues the pass's result with its priority (here
	// due at once rather than in a minute: the order is what is tested).
	q.AddWithOpts(priorityqueue.AddOpts{After: time.Millisecond, Priority: res.Priority}, req)
	eventually(t, "the refresh is due", 5*time.Second, func() (bool, string) { return q.Len() == 1, fmt.Sprint(q.Len()) })
	// A pool created now is queued by its create event, at the default priority.
	created := reconcile.Request{NamespacedName: client.ObjectKey{Namespace: iso.ns, Name: "created"}}
	q.AddWithOpts(priorityqueue.AddOpts{}, created)
	if first, _, _ := q.GetWithPriority(); first != created {
		t.Fatalf("the queue served %v first, want the new pool %v before the periodic refresh", first, created)
	}
}

// A pool with no pod to read measures nothing, so its passes write nothing:
// no lastScrapeTime, and no heartbeat rewrite of an unchanged status however
// long it stays so. (A pool with pods rewrites an unchanged status every
// five minutes, to show its figures are fresh.)
func TestPoolWithoutPodsWritesNoHeartbeat(t *testing.T) {
	iso := newIsolated(t)
	req := iso.createPool(t, "podless")
	now := time.Now()
	iso.r.Now = func() time.Time { return now }
	if _, err := iso.r.Reconcile(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cache holds the first status", 20*time.Second, func() (bool, string) {
		wp := &v1.WorkerPool{}
		err := iso.cache.Get(context.Background(), req.NamespacedName, wp)
		return err == nil && wp.Status.ObservedGeneration == wp.Generation, fmt.Sprint(err, wp.Status.ObservedGeneration)
	})
	for _, later := range []time.Duration{time.Minute, 6 * time.Minute, time.Hour} {
		now = now.Add(later)
		before := &v1.WorkerPool{}
		_ = k8s.Get(ctx(t), req.NamespacedName, before)
		_, n := iso.requests.since(0)
		if _, err := iso.r.Reconcile(ctx(t), req); err != nil {
			t.Fatal(err)
		}
		seen, _ := iso.requests.since(n)
		for _, r := range seen {
			if method, _, _ := strings.Cut(r, " "); method != http.MethodGet {
				after := &v1.WorkerPool{}
				_ = k8s.Get(ctx(t), req.NamespacedName, after)
				t.Fatalf("an unchanged pool without pods, %s later: the pass wrote %s (all requests: %v)\nbefore %+v\nafter %+v", later, r, seen, before.Status, after.Status)
			}
		}
	}
	wp := &v1.WorkerPool{}
	if err := k8s.Get(ctx(t), req.NamespacedName, wp); err != nil {
		t.Fatal(err)
	}
	if wp.Status.LastScrapeTime != nil {
		t.Fatalf("lastScrapeTime %v for a pool no pod of which was ever read", wp.Status.LastScrapeTime)
	}
}

// deploymentRequests are the requests of reqs that read the Deployment name
// past the cache, and those that write it.
func deploymentRequests(reqs []string, name string) (reads, writes []string) {
	for _, r := range reqs {
		method, path, _ := strings.Cut(r, " ")
		if !strings.HasSuffix(path, "/deployments/"+name) {
			continue
		}
		if method == http.MethodGet {
			reads = append(reads, r)
		} else {
			writes = append(writes, r)
		}
	}
	return reads, writes
}

// The operator caches Deployments without their pod template and tells an
// unchanged one by its digest: a pass over an unchanged pool reads no
// Deployment past the cache, an operator that starts anew reads each once,
// and a Deployment someone edited is read, found changed and applied back.
func TestUnchangedDeploymentIsReadOnce(t *testing.T) {
	iso := newIsolated(t)
	req := iso.createPool(t, "digest")
	pass := func(r *controllers.WorkerPoolReconciler) []string {
		t.Helper()
		_, n := iso.requests.since(0)
		if _, err := r.Reconcile(ctx(t), req); err != nil {
			t.Fatal(err)
		}
		seen, _ := iso.requests.since(n)
		return seen
	}
	pass(iso.r)
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx(t), req.NamespacedName, dep); err != nil {
		t.Fatal(err)
	}
	cachedAt := func(version string) {
		t.Helper()
		eventually(t, "the cache holds the Deployment at version "+version, 20*time.Second, func() (bool, string) {
			cached := &appsv1.Deployment{}
			err := iso.cache.Get(context.Background(), req.NamespacedName, cached)
			return err == nil && cached.ResourceVersion == version, fmt.Sprint(err, cached.ResourceVersion)
		})
	}
	cachedAt(dep.ResourceVersion)
	if reads, writes := deploymentRequests(pass(iso.r), dep.Name); len(reads)+len(writes) != 0 {
		t.Fatalf("a pass after the pool's creation: Deployment requests %v %v, want none (the apply response's digest is the cache's)", reads, writes)
	}

	restarted := &controllers.WorkerPoolReconciler{Client: iso.r.Client, APIReader: iso.r.APIReader,
		Scraper: controllers.NewScraper(scrapeTimeout, 4), StatusInterval: time.Minute}
	if reads, writes := deploymentRequests(pass(restarted), dep.Name); len(reads) != 1 || len(writes) != 0 {
		t.Fatalf("first pass of a new operator: Deployment reads %v, writes %v; want one read, no write", reads, writes)
	}
	if reads, writes := deploymentRequests(pass(restarted), dep.Name); len(reads)+len(writes) != 0 {
		t.Fatalf("second pass of a new operator: Deployment requests %v %v, want none", reads, writes)
	}

	edit := []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"worker","image":"edited:v2"}]}}}}`)
	if err := k8s.Patch(ctx(t), dep, client.RawPatch("application/strategic-merge-patch+json", edit), client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	cachedAt(dep.ResourceVersion)
	if reads, writes := deploymentRequests(pass(restarted), dep.Name); len(reads) != 1 || len(writes) != 1 {
		t.Fatalf("a pass after an edit of the Deployment: reads %v, writes %v; want one of each", reads, writes)
	}
	if err := k8s.Get(ctx(t), req.NamespacedName, dep); err != nil {
		t.Fatal(err)
	}
	if image := dep.Spec.Template.Spec.Containers[0].Image; image == "edited:v2" {
		t.Fatalf("the edited image %q stayed", image)
	}
	cachedAt(dep.ResourceVersion)
	if reads, writes := deploymentRequests(pass(restarted), dep.Name); len(reads)+len(writes) != 0 {
		t.Fatalf("a pass after the Deployment was applied back: requests %v %v, want none", reads, writes)
	}
}
