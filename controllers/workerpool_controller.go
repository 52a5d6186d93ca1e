// Package controllers holds the WorkerPool reconciler: it runs each pool's
// worker pods and writes what the pods measure into the pool's status.
package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// FieldOwner names the operator in managedFields and events.
const FieldOwner = "workerpool-operator"

// conflictRetry is how soon a pool whose status write lost a race is
// reconciled again: long enough for the cache to catch up.
const conflictRetry = 200 * time.Millisecond

// WorkerPoolReconciler keeps each pool's children in line with its spec and
// its status in line with what the pods measure.
type WorkerPoolReconciler struct {
	client.Client
	// Scheme sets owner references on the children.
	Scheme *runtime.Scheme
	// Recorder emits events on condition transitions.
	Recorder events.EventRecorder
	// Scraper reads the pods' metrics.
	Scraper *Scraper
	// Metrics are the per-pool operator series (may be nil).
	Metrics *PoolMetrics
	// StatusInterval is how often a pool's status is refreshed when nothing
	// else triggers a reconcile.
	StatusInterval time.Duration
	// Now is the clock (time.Now unless a test replaces it).
	Now func() time.Time
}

// +kubebuilder:rbac:groups=workers.tasker.dev,resources=workerpools,verbs=get;list;watch
// +kubebuilder:rbac:groups=workers.tasker.dev,resources=workerpools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=workers.tasker.dev,resources=workerpools/finalizers,verbs=update
// +kubebuilder:rbac:groups=core,resources=configmaps;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=core,resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one pool's children and status up to date.
func (r *WorkerPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	pool := &v1.WorkerPool{}
	if err := r.Get(ctx, req.NamespacedName, pool); err != nil {
		if apierrors.IsNotFound(err) {
			r.Metrics.forget(req.Namespace, req.Name) // children go with their owner (garbage collection)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get WorkerPool: %w", err)
	}
	if !pool.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	obs := observation{}
	obs.ConfigErr = r.reconcileChildren(ctx, pool)
	if obs.ConfigErr != nil && !isSpecError(obs.ConfigErr) {
		return ctrl.Result{}, obs.ConfigErr
	}
	if err := r.observe(ctx, pool, &obs); err != nil {
		return ctrl.Result{}, err
	}
	next := computeStatus(pool, obs)
	r.emitEvents(pool, transitionEvents(pool.Status.Conditions, next.Conditions))
	r.Metrics.observe(pool, &next, countErrors(obs.Pods))
	if statusNeedsWrite(pool.Status, next) {
		if err := r.writeStatus(ctx, pool, next); err != nil {
			if apierrors.IsConflict(err) {
				// The cache had not caught up with a newer pool yet: try again
				// with it. Not an error worth a log line.
				return ctrl.Result{RequeueAfter: conflictRetry}, nil
			}
			return ctrl.Result{}, err
		}
		log.V(1).Info("status written", "ready", next.ReadyReplicas, "pending", next.FFI.PendingEvents,
			"saturation", next.Dispatch.CompletionSaturationPercent)
	}
	return ctrl.Result{RequeueAfter: r.StatusInterval}, nil
}

// specError marks a spec the worker would refuse: reported in status, not
// retried (a new generation will reconcile again).
type specError struct{ err error }

func (e specError) Error() string { return e.err.Error() }
func (e specError) Unwrap() error { return e.err }

func isSpecError(err error) bool {
	_, ok := err.(specError)
	return ok
}

// reconcileChildren creates or updates the ConfigMap, Deployment, Service
// and (for more than one replica) PodDisruptionBudget.
func (r *WorkerPoolReconciler) reconcileChildren(ctx context.Context, pool *v1.WorkerPool) error {
	toml, hash, err := renderWorkerConfig(pool)
	if err != nil {
		return specError{err}
	}
	cm := desiredConfigMap(pool, toml)
	if err := apply(ctx, r, pool, cm, &corev1.ConfigMap{ObjectMeta: nameOf(cm)}, func(existing *corev1.ConfigMap) {
		existing.Data = cm.Data
	}); err != nil {
		return err
	}
	dep := desiredDeployment(pool, hash)
	if err := apply(ctx, r, pool, dep, &appsv1.Deployment{ObjectMeta: nameOf(dep)}, func(existing *appsv1.Deployment) {
		existing.Spec.Replicas = dep.Spec.Replicas
		if existing.Spec.Selector == nil {
			existing.Spec.Selector = dep.Spec.Selector // immutable once set
		}
		// DeepDerivative ignores fields the API server defaulted, so an
		// unchanged pool never rewrites (and never rolls) its pods.
		if !equality.Semantic.DeepDerivative(dep.Spec.Template, existing.Spec.Template) {
			existing.Spec.Template = dep.Spec.Template
		}
	}); err != nil {
		return err
	}
	svc := desiredService(pool)
	if err := apply(ctx, r, pool, svc, &corev1.Service{ObjectMeta: nameOf(svc)}, func(existing *corev1.Service) {
		existing.Spec.Selector = svc.Spec.Selector
		existing.Spec.Ports = mergePorts(svc.Spec.Ports, existing.Spec.Ports)
		existing.Spec.PublishNotReadyAddresses = svc.Spec.PublishNotReadyAddresses
		if existing.Spec.ClusterIP == "" {
			existing.Spec.ClusterIP = svc.Spec.ClusterIP
		}
	}); err != nil {
		return err
	}
	pdb := desiredPDB(pool)
	if !wantsPDB(pool) {
		// Look in the cache first: a delete call on every pass of every
		// single-replica pool would be pure API load.
		existing := &policyv1.PodDisruptionBudget{}
		switch err := r.Get(ctx, client.ObjectKeyFromObject(pdb), existing); {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("get PodDisruptionBudget %s: %w", pdb.Name, err)
		case !metav1.IsControlledBy(existing, pool):
			return nil // not ours: leave it
		}
		if err := r.Delete(ctx, existing, client.Preconditions{UID: &existing.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete PodDisruptionBudget %s: %w", pdb.Name, err)
		}
		r.Metrics.childWrite(pool, "PodDisruptionBudget", "deleted")
		return nil
	}
	return apply(ctx, r, pool, pdb, &policyv1.PodDisruptionBudget{ObjectMeta: nameOf(pdb)}, func(existing *policyv1.PodDisruptionBudget) {
		existing.Spec.MaxUnavailable, existing.Spec.MinAvailable = pdb.Spec.MaxUnavailable, nil
		existing.Spec.Selector = pdb.Spec.Selector
	})
}

// mergePorts keeps the defaults the API server filled in (protocol) so an
// unchanged Service compares equal.
func mergePorts(want, have []corev1.ServicePort) []corev1.ServicePort {
	if equality.Semantic.DeepDerivative(want, have) {
		return have
	}
	return want
}

func nameOf(o client.Object) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: o.GetName(), Namespace: o.GetNamespace()}
}

// apply creates the desired child, or updates the existing one through
// mutate (which copies the fields the operator owns from desired). obj
// starts with only a name and is filled from the cache, so an unchanged
// child costs no API call. Labels are merged (others' labels stay) and the
// pool becomes the controller owner.
func apply[T client.Object](ctx context.Context, r *WorkerPoolReconciler, pool *v1.WorkerPool, desired, obj T, mutate func(T)) error {
	want := desired.GetLabels()
	op, err := controllerutil.CreateOrUpdate(ctx, r.Client, obj, func() error {
		l := obj.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		for k, v := range want {
			l[k] = v
		}
		obj.SetLabels(l)
		mutate(obj)
		return controllerutil.SetControllerReference(pool, obj, r.Scheme)
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", kindOf(obj), obj.GetName(), err)
	}
	if op != controllerutil.OperationResultNone {
		r.Metrics.childWrite(pool, kindOf(obj), string(op))
		ctrl.LoggerFrom(ctx).Info("child "+string(op), "kind", kindOf(obj), "name", obj.GetName())
	}
	return nil
}

func kindOf(o client.Object) string {
	switch o.(type) {
	case *corev1.ConfigMap:
		return "ConfigMap"
	case *appsv1.Deployment:
		return "Deployment"
	case *corev1.Service:
		return "Service"
	case *policyv1.PodDisruptionBudget:
		return "PodDisruptionBudget"
	}
	return fmt.Sprintf("%T", o)
}

// observe reads the Deployment and the pods from the cache and scrapes
// every ready pod.
func (r *WorkerPoolReconciler) observe(ctx context.Context, pool *v1.WorkerPool, obs *observation) error {
	dep := &appsv1.Deployment{}
	switch err := r.Get(ctx, client.ObjectKeyFromObject(pool), dep); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("get Deployment: %w", err)
	case metav1.IsControlledBy(dep, pool):
		obs.Deployment = dep
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(pool.Namespace), client.MatchingLabels(selectorLabels(pool))); err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	var targets []scrapeTarget
	var index []int
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		o := podObservation{Name: p.Name, Ready: podReady(p)}
		if o.Ready {
			t, err := targetFor(p)
			if err != nil {
				o.Err = err
			} else {
				targets = append(targets, t)
				index = append(index, len(obs.Pods))
			}
		}
		obs.Pods = append(obs.Pods, o)
	}
	start := time.Now()
	samples, errs := r.Scraper.ScrapeAll(ctx, targets)
	if r.Metrics != nil && len(targets) > 0 {
		r.Metrics.scrapePass.Observe(time.Since(start).Seconds())
	}
	for j, i := range index {
		obs.Pods[i].Sample, obs.Pods[i].Err = samples[j], errs[j]
	}
	obs.Now = metav1.NewTime(r.now())
	return nil
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

func countErrors(pods []podObservation) int {
	n := 0
	for _, p := range pods {
		if p.Ready && p.Err != nil {
			n++
		}
	}
	return n
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

// writeStatus is the reconcile's single status write: the whole status,
// guarded by the resourceVersion read at the start, so a concurrent change
// (a new generation) is never overwritten with stale conditions; a conflict
// simply requeues.
func (r *WorkerPoolReconciler) writeStatus(ctx context.Context, pool *v1.WorkerPool, next v1.WorkerPoolStatus) error {
	pool = pool.DeepCopy()
	pool.Status = next
	if err := r.Status().Update(ctx, pool); err != nil {
		return fmt.Errorf("write WorkerPool status: %w", err)
	}
	return nil
}

// SetupWithManager watches pools, their children and their pods. Pods are
// not owned by the pool (a ReplicaSet owns them), so they are mapped to
// their pool through the pool label.
func (r *WorkerPoolReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.WorkerPool{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.ConfigMap{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToPool), builder.WithPredicates(podReadinessChanged())).
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

// podReadinessChanged lets through pod creations, deletions and changes of
// readiness or IP: what changes which pods are scraped. Other pod updates
// (every kubelet status heartbeat) would only add load.
func podReadinessChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Pod)
			n, ok2 := e.ObjectNew.(*corev1.Pod)
			if !ok1 || !ok2 {
				return true
			}
			return podReady(o) != podReady(n) || o.Status.PodIP != n.Status.PodIP || (o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil)
		},
	}
}

func controllerOptions(concurrency int) controller.Options {
	return controller.Options{MaxConcurrentReconciles: max(1, concurrency)}
}
