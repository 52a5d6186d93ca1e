package envtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/controllers"
)

// A pool's periodic status refresh waits behind new and changed pools: when
// thousands of refreshes are due at once (after a restart, or while a flood
// of pools is created), a new pool is not served after all of them.
//
// The reconciler runs as the manager wires it (its cache, with the
// operator's indexes), in a namespace of its own, without a controller, so
// the test sees the result of one pass; the queue is controller-runtime's
// priority queue, which the manager's controller uses by default, fed as
// the controller feeds it.
func TestPeriodicRefreshYieldsToNewPools(t *testing.T) {
	ns := fmt.Sprintf("refresh-%d", time.Now().UnixNano()%1e6)
	if err := k8s.Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	mgr, err := manager.New(cfg, manager.Options{
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

	steady := minimal("steady")
	steady.Namespace = ns
	if err := k8s.Create(ctx(t), steady); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cache holds the pool", 20*time.Second, func() (bool, string) {
		err := mgr.GetClient().Get(context.Background(), keyOf(steady), &v1.WorkerPool{})
		return err == nil, fmt.Sprint(err)
	})
	req := reconcile.Request{NamespacedName: keyOf(steady)}
	res, err := r.Reconcile(ctx(t), req)
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
	created := reconcile.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: "created"}}
	q.AddWithOpts(priorityqueue.AddOpts{}, created)
	if first, _, _ := q.GetWithPriority(); first != created {
		t.Fatalf("the queue served %v first, want the new pool %v before the periodic refresh", first, created)
	}
}
