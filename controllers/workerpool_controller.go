// Package controllers holds the WorkerPool reconciler: it runs each pool's
// worker pods and writes what the pods measure into the pool's status.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// FieldOwner names the operator in managedFields (its server-side apply
// field manager) and in events.
const FieldOwner = "workerpool-operator"

// conflictRetry is how soon a pool whose status write lost a race is
// reconciled again: long enough for the cache to catch up.
const conflictRetry = 200 * time.Millisecond

// sampleMaxAge is how many status intervals a pod's last good sample keeps
// counting for the pool after its scrapes start failing.
const sampleMaxAge = 3

// WorkerPoolReconciler keeps each pool's children in line with its spec and
// its status in line with what the pods measure.
type WorkerPoolReconciler struct {
	client.Client
	// APIReader reads past the cache (the manager's API reader). It is used
	// only to check that no foreign object holds a child's name before the
	// child is created. Nil reads through Client.
	APIReader client.Reader
	// Recorder emits events on condition transitions.
	Recorder events.EventRecorder
	// Scraper reads the pods' metrics.
	Scraper *Scraper
	// Metrics are the per-pool operator series (may be nil).
	Metrics *PoolMetrics
	// StatusInterval is how often a pool's status is refreshed when nothing
	// else triggers a reconcile, and the least time between two scrapes of a
	// pool whose ready pods did not change.
	StatusInterval time.Duration
	// Queues measures the pools' queues (status.queue and the autoscaler);
	// nil turns queue reading off.
	Queues *QueueReader
	// AutoscaleInterval is how often a pool with spec.autoscaling is
	// reconciled, so the autoscaler reacts to a burst within it.
	AutoscaleInterval time.Duration
	// Now is the clock (time.Now unless a test replaces it).
	Now func() time.Time

	samples  sampleStore
	scales   scaleHistories
	own      ownWrites
	verified verifiedChildren
}

// scaleHistories keeps each autoscaled pool's recent decisions.
type scaleHistories struct {
	mu    sync.Mutex
	pools map[types.NamespacedName]*scaleHistory
}

func (s *scaleHistories) get(key types.NamespacedName) *scaleHistory {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pools == nil {
		s.pools = map[types.NamespacedName]*scaleHistory{}
	}
	h := s.pools[key]
	if h == nil {
		h = &scaleHistory{}
		s.pools[key] = h
	}
	return h
}

func (s *scaleHistories) forget(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pools, key)
}

// podDeletionCost tells the ReplicaSet controller which pods to remove
// first when it scales in: the lowest cost.
const podDeletionCost = "controller.kubernetes.io/pod-deletion-cost"

// +kubebuilder:rbac:groups=workers.tasker.dev,resources=workerpools,verbs=get;list;watch
// +kubebuilder:rbac:groups=workers.tasker.dev,resources=workerpools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=workers.tasker.dev,resources=workerpools/finalizers,verbs=update
// +kubebuilder:rbac:groups=core,resources=configmaps;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=core,resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=core,resources=secrets,verbs=get
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one pool's children and status up to date: observe the
// Deployment, the pods and the queue; decide the replica count; plan the
// children and apply them; then compute and write the status (deferred, so
// that a pass that failed half-way still records its generation and what
// went wrong).
func (r *WorkerPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, err error) {
	pool := &v1.WorkerPool{}
	if err := r.Get(ctx, req.NamespacedName, pool); err != nil {
		if apierrors.IsNotFound(err) {
			// Children go with their owner (garbage collection).
			r.Metrics.forget(req.Namespace, req.Name)
			r.samples.forget(req.NamespacedName)
			r.scales.forget(req.NamespacedName)
			r.verified.forget(req.NamespacedName) // the Deployment has the pool's name
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get WorkerPool: %w", err)
	}
	if !pool.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	obs := observation{Now: metav1.NewTime(r.now())}
	defer func() { result, err = r.writeStatus(ctx, pool, &obs, result, err) }()

	obs.failed(r.observe(ctx, pool, &obs))
	obs.Replicas = r.replicas(pool, &obs)
	childChanged := false // beside this pass's own write (ownWrites)
	plan, err := planChildren(pool, obs.Replicas)
	if err != nil {
		obs.SpecErr = err // children stay as they were until the spec is fixed
	} else {
		obs.failed(r.markPodsForScaleIn(ctx, pool, &obs))
		var dep *appsv1.Deployment
		dep, childChanged, err = r.applyChildren(ctx, pool, plan)
		if obs.Blocked = asBlocked(err); obs.Blocked == nil {
			obs.failed(err)
		}
		if dep != nil {
			obs.Deployment = dep // as written in this pass
		}
	}
	obs.markCurrentPods()
	if obs.ApplyErr != nil {
		return ctrl.Result{}, obs.ApplyErr // retried with backoff
	}
	if childChanged {
		// Someone changed a child while this pass wrote it: look again
		// once the cache holds the change.
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	requeue := r.StatusInterval
	if pool.Spec.Autoscaling != nil && r.AutoscaleInterval > 0 {
		requeue = min(requeue, r.AutoscaleInterval)
	}
	return refreshLater(requeue), nil
}

// refreshLater schedules the pool's periodic status refresh at low
// priority: when many pools are due at once (thousands, after a restart or
// while a flood of new pools is created), a new pool, a changed spec or a
// pod that turned ready waits for none of them.
func refreshLater(interval time.Duration) ctrl.Result {
	return ctrl.Result{RequeueAfter: interval, Priority: ptr.To(handler.LowPriority)}
}

// observe reads what the pass decides on and the status is computed from:
// the Deployment as cached, the pool's pods and their metrics, and the
// pool's queues.
func (r *WorkerPoolReconciler) observe(ctx context.Context, pool *v1.WorkerPool, obs *observation) error {
	var errs []error
	dep := &appsv1.Deployment{}
	switch err := r.Get(ctx, client.ObjectKeyFromObject(pool), dep); {
	case apierrors.IsNotFound(err):
	case err != nil:
		errs = append(errs, fmt.Errorf("get Deployment: %w", err))
	case metav1.IsControlledBy(dep, pool):
		obs.Deployment = dep
	}
	if r.Queues != nil {
		q := r.Queues.Read(ctx, pool)
		obs.Queue = &q
		r.Metrics.observeQueue(pool, q)
	}
	pods := &corev1.PodList{}
	if err := r.listOfPool(ctx, pods, pool); err != nil {
		return errors.Join(append(errs, fmt.Errorf("list pods: %w", err))...)
	}
	var targets []scrapeTarget
	present := map[string]bool{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue // leaving the pool: a terminating pod drains
		}
		present[p.Name] = true
		o := podObservation{Name: p.Name, Ready: podReady(p), Problem: diagnosePod(p),
			template: p.Annotations[v1.TemplateHashAnnotation], deletionCost: p.Annotations[podDeletionCost]}
		o.Running = !o.Ready && containersRunning(p)
		if o.Ready || o.Running {
			if t, err := targetFor(p); err != nil {
				o.Err = err
			} else {
				targets = append(targets, t)
			}
		}
		obs.Pods = append(obs.Pods, o)
	}
	r.scrape(ctx, pool, targets, present, obs)
	return errors.Join(errs...)
}

// replicas is the pod count for this pass: the spec's, or with
// spec.autoscaling (and not suspended) the autoscaler's decision from the
// queue just read and the pods' last samples.
func (r *WorkerPoolReconciler) replicas(pool *v1.WorkerPool, obs *observation) int32 {
	a := pool.Spec.Autoscaling
	if a == nil || pool.Spec.Suspend {
		return specReplicas(pool)
	}
	in := scaleInputs{Now: obs.Now.Time}
	switch {
	case obs.Deployment != nil && obs.Deployment.Spec.Replicas != nil:
		in.Current = *obs.Deployment.Spec.Replicas
	case a.MinReplicas != nil:
		in.Current = *a.MinReplicas // a new pool starts at its minimum
	default:
		in.Current = 1
	}
	if q := obs.Queue; q != nil && q.Err == nil {
		in.BacklogKnown, in.Backlog, in.OldestReady = true, q.Backlog, q.OldestReady
	}
	agg := aggregate(obs.Pods)
	if agg.covered() > 0 {
		in.UtilKnown, in.InFlight, in.Capacity = true, agg.inFlight, agg.capacity
	}
	if agg.measured() && agg.maxSaturation >= saturationCritical(pool) {
		in.Critical = agg.saturPod
	}
	d := decideReplicas(*a, in, r.scales.get(client.ObjectKeyFromObject(pool)))
	obs.Scale = &d
	r.Metrics.observeScale(pool, d)
	return d.Desired
}

// markPodsForScaleIn gives each pod a deletion cost of its handlers in
// flight before the pool scales in, so the ReplicaSet removes idle pods
// first and busy ones keep their work (a removed pod drains all the same).
func (r *WorkerPoolReconciler) markPodsForScaleIn(ctx context.Context, pool *v1.WorkerPool, obs *observation) error {
	d := obs.Deployment
	if d == nil || d.Spec.Replicas == nil || obs.Replicas >= *d.Spec.Replicas {
		return nil
	}
	for _, p := range obs.Pods {
		if p.Sample == nil {
			continue // not ready or not read: the ReplicaSet removes such pods first anyway
		}
		cost := strconv.Itoa(int(count32(p.Sample.InFlight)))
		if p.deletionCost == cost {
			continue
		}
		patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, podDeletionCost, cost)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: pool.Namespace}}
		if err := r.Patch(ctx, pod, client.RawPatch(types.MergePatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("mark pod %s for scale-in: %w", p.Name, err)
		}
		r.Metrics.childWrite(pool, "Pod", "annotated")
	}
	return nil
}

// scrape reads the ready pods' metrics, unless the pool was read less than
// a status interval ago and its ready pods are the same, and fills each
// pod's sample: fresh, or its recent last good one when this scrape failed.
func (r *WorkerPoolReconciler) scrape(ctx context.Context, pool *v1.WorkerPool, targets []scrapeTarget, present map[string]bool, obs *observation) {
	key := client.ObjectKeyFromObject(pool)
	now := r.now()
	if r.samples.due(key, targets, now, r.StatusInterval) {
		samples, errs := []*podSample(nil), []error(nil)
		if len(targets) > 0 {
			start := time.Now()
			samples, errs = r.Scraper.ScrapeAll(ctx, targets)
			r.Metrics.observeScrapePass(time.Since(start))
			r.Metrics.scrapeErrors(pool, countErrors(errs))
		}
		r.samples.record(key, targets, samples, errs, now, present)
	}
	scrapedAt, records := r.samples.lookup(key)
	if !scrapedAt.IsZero() {
		obs.ScrapedAt = metav1.NewTime(scrapedAt)
	}
	maxAge := sampleMaxAge * r.StatusInterval
	for i := range obs.Pods {
		p := &obs.Pods[i]
		rec, ok := records[p.Name]
		if !ok || !p.Ready && !p.Running {
			continue
		}
		if !p.Ready && rec.err != nil {
			continue // a pod that is not ready may well not answer: not news
		}
		p.Err = rec.err
		if rec.sample == nil {
			continue
		}
		age := now.Sub(rec.sampled)
		if rec.err != nil && age > maxAge {
			continue // too old to stand for the pod
		}
		p.Sample, p.Stale, p.SampleAge = rec.sample, rec.err != nil, age
	}
}

func (r *WorkerPoolReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// podReady: the pod's Ready condition is True and it is not being deleted
// (a terminating pod drains and is no longer part of the pool's capacity).
func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// containersRunning: the pod runs and each of its containers is running, so
// its metrics port should answer although it is not ready.
func containersRunning(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Running == nil {
			return false
		}
	}
	return true
}

func countErrors(errs []error) int {
	n := 0
	for _, err := range errs {
		if err != nil {
			n++
		}
	}
	return n
}

// writeStatus is the pass's last step, run however it ended: it computes
// the status from what was observed and writes it when it changed, guarded
// by the resourceVersion read at the start, so that a newer pool (a new
// generation, or a status the cache had not caught up with) is never
// overwritten. Transition events are emitted only once the write succeeded,
// and so once per transition.
func (r *WorkerPoolReconciler) writeStatus(ctx context.Context, pool *v1.WorkerPool, obs *observation, result ctrl.Result, passErr error) (ctrl.Result, error) {
	next := computeStatus(pool, *obs)
	r.Metrics.observe(pool, &next)
	if !statusNeedsWrite(pool.Status, next) {
		return settle(result, passErr)
	}
	updated := pool.DeepCopy()
	updated.Status = next
	if err := r.Status().Update(ctx, updated); err != nil {
		if apierrors.IsConflict(err) {
			// The cache had not caught up with a newer pool yet: try again
			// with it. Not an error worth a log line.
			return settle(ctrl.Result{RequeueAfter: conflictRetry}, passErr)
		}
		if apierrors.IsNotFound(err) {
			// Deleted during the pass: no status is left to write, and
			// its children go with it.
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, errors.Join(passErr, fmt.Errorf("write WorkerPool status: %w", err))
	}
	ctrl.LoggerFrom(ctx).V(1).Info("status written", "ready", next.ReadyReplicas, "pending", next.FFI.PendingEvents,
		"saturation", next.Dispatch.CompletionSaturationPercent)
	r.emitEvents(pool, statusEvents(pool.Status, next))
	return settle(result, passErr)
}

// settle returns the pass's result, or only its error when it failed:
// controller-runtime retries a failed pass with backoff and ignores a
// requeue time returned with an error.
func settle(result ctrl.Result, err error) (ctrl.Result, error) {
	if err != nil {
		return ctrl.Result{}, err
	}
	return result, nil
}

// emitEvents records condition transitions on the pool.
func (r *WorkerPoolReconciler) emitEvents(pool *v1.WorkerPool, evs []conditionEvent) {
	if r.Recorder == nil {
		return
	}
	for _, e := range evs {
		r.Recorder.Eventf(pool, nil, e.Type, e.Reason, "StatusChanged", "%s", e.Message)
	}
}

// SetupWithManager watches pools, their children and their pods. Pods are
// not owned by the pool (a ReplicaSet owns them), so they are mapped to
// their pool through the pool label.
func (r *WorkerPoolReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	if err := indexByPool(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.WorkerPool{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.ConfigMap{}, builder.WithPredicates(r.own.notOwnEcho())).
		Owns(&appsv1.Deployment{}, builder.WithPredicates(r.own.notOwnEcho())).
		Owns(&corev1.Service{}, builder.WithPredicates(r.own.notOwnEcho())).
		Owns(&policyv1.PodDisruptionBudget{}, builder.WithPredicates(r.own.notOwnEcho())).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToPool), builder.WithPredicates(podStateChanged())).
		WithOptions(controllerOptions(concurrency)).
		Named("workerpool").
		Complete(r)
}

func podToPool(_ context.Context, o client.Object) []reconcile.Request {
	name, ok := o.GetLabels()[v1.PoolLabel]
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
}

// podStateChanged lets through pod creations, deletions and the changes
// the status is computed from: readiness, IP, termination, template, and
// what blocks the pod (so Stalled follows a pull error or a crash loop at
// once). Other pod updates (every kubelet status heartbeat, each restart of
// a crash-looping container) would only add load.
func podStateChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Pod)
			n, ok2 := e.ObjectNew.(*corev1.Pod)
			if !ok1 || !ok2 {
				return true
			}
			return podReady(o) != podReady(n) || o.Status.PodIP != n.Status.PodIP ||
				(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) || o.Status.Phase != n.Status.Phase ||
				o.Annotations[v1.TemplateHashAnnotation] != n.Annotations[v1.TemplateHashAnnotation] ||
				diagnosePod(o).Reason != diagnosePod(n).Reason
		},
	}
}

func controllerOptions(concurrency int) controller.Options {
	return controller.Options{MaxConcurrentReconciles: max(1, concurrency)}
}
