package controllers

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/util/csaupgrade"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// blockedError is a child write that cannot succeed until someone changes
// something: the pool is Stalled with this reason, and the pass is not
// retried with backoff (a change of the pool or the child reconciles again,
// and so does the next status interval).
type blockedError struct {
	Reason  string // a Stalled reason: ChildConflict, Forbidden or InvalidSpec
	Message string
}

func (e *blockedError) Error() string { return e.Message }

// asBlocked returns the blockedError in err's chain, if any.
func asBlocked(err error) *blockedError {
	var b *blockedError
	if errors.As(err, &b) {
		return b
	}
	return nil
}

// applyChildren brings the pool's children in line with the plan and
// returns its Deployment as the API server stored it in this pass (or, when
// nothing changed, as the cache holds it, which then matches the plan).
// Children the plan no longer has are deleted. changed reports that a
// child changed beside the pass's own write of it (see ownWrites): the
// pool wants another pass soon.
func (r *WorkerPoolReconciler) applyChildren(ctx context.Context, pool *v1.WorkerPool, plan childPlan) (dep *appsv1.Deployment, changed bool, err error) {
	for _, desired := range plan.objects() {
		live, missed, err := r.applyChild(ctx, pool, desired)
		changed = changed || missed
		if err != nil {
			return nil, changed, err
		}
		if d, ok := live.(*appsv1.Deployment); ok {
			dep = d
		}
	}
	if plan.PDB == nil {
		if err := r.deleteIfOwned(ctx, pool, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: pool.Name, Namespace: pool.Namespace}}); err != nil {
			return nil, changed, err
		}
	}
	if err := r.pruneConfigMaps(ctx, pool, plan.ConfigMap.Name, dep); err != nil {
		return nil, changed, err
	}
	return dep, changed, nil
}

// applyChild writes one planned child with server-side apply, unless the
// cached child already carries the same applied hash and still holds every
// value the plan sets (someone may have changed one back). It refuses to
// touch an object of that name that the pool does not control. missed
// reports an event of the child, other than the write's own, that came
// while the write was in flight.
func (r *WorkerPoolReconciler) applyChild(ctx context.Context, pool *v1.WorkerPool, desired client.Object) (_ client.Object, missed bool, _ error) {
	kind := kindOf(desired)
	hash := stampAppliedHash(desired)
	u, err := applyConfiguration(desired)
	if err != nil {
		return nil, false, err
	}

	live := desired.DeepCopyObject().(client.Object)
	create := false
	switch err := r.Get(ctx, client.ObjectKeyFromObject(desired), live); {
	case err == nil:
		if !metav1.IsControlledBy(live, pool) {
			return nil, false, conflict(kind, live, pool)
		}
		switch live.GetAnnotations()[v1.AppliedHashAnnotation] {
		case hash:
			same, err := r.holdsPlan(ctx, u, hash, live)
			if err != nil {
				return nil, false, err
			}
			if same {
				return live, false, nil
			}
		case "":
			// Written before the operator used server-side apply.
			if err := r.adoptUpdatedFields(ctx, pool, live); err != nil {
				return nil, false, err
			}
		}
	case apierrors.IsNotFound(err):
		// The cache holds only objects labelled as the operator's, so an
		// object of this name may still exist: the child is created by an
		// apply that only creates, so that an object someone else made under
		// this name is reported, never taken over.
		create = true
	default:
		return nil, false, fmt.Errorf("get %s %s: %w", kind, desired.GetName(), err)
	}

	r.own.writing(desired, r.now())
	written, err := r.write(ctx, pool, desired, u, create)
	if d, ok := written.(*appsv1.Deployment); ok && err == nil {
		err = r.verified.remember(d, hash)
	}
	return written, r.own.wrote(desired, written), err
}

// holdsPlan says whether the cached child live still holds every value of
// the apply request u (see unchanged). A Deployment is cached without its
// pod template (deploymentForCache): it is compared whole, read past the
// cache, the first time and whenever its digest changes, and a digest found
// to hold the plan of this applied hash is remembered, so that an unchanged
// Deployment costs no read.
func (r *WorkerPoolReconciler) holdsPlan(ctx context.Context, u *unstructured.Unstructured, hash string, live client.Object) (bool, error) {
	digest, slim := live.GetAnnotations()[cachedDigestAnnotation]
	if !slim {
		return unchanged(u, live), nil
	}
	key := client.ObjectKeyFromObject(live)
	if r.verified.holds(key, hash, digest) {
		return true, nil
	}
	full := &appsv1.Deployment{}
	switch err := r.apiReader().Get(ctx, key, full); {
	case apierrors.IsNotFound(err):
		return false, nil // deleted since: the apply creates it again
	case err != nil:
		return false, fmt.Errorf("get Deployment %s: %w", key.Name, err)
	}
	if !unchanged(u, full) {
		return false, nil
	}
	return true, r.verified.remember(full, hash)
}

// verifiedChildren remembers, per Deployment, the digest
// (deploymentDigest) it had when it was last known to hold the plan of an
// applied hash: compared whole, or as the API server stored the operator's
// apply of it.
type verifiedChildren struct {
	mu      sync.Mutex
	digests map[types.NamespacedName]verifiedDigest
}

type verifiedDigest struct{ applied, digest string }

func (v *verifiedChildren) holds(key types.NamespacedName, applied, digest string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.digests[key] == verifiedDigest{applied, digest}
}

// remember records d, found holding the plan of the applied hash.
func (v *verifiedChildren) remember(d *appsv1.Deployment, applied string) error {
	digest, err := deploymentDigest(d)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.digests == nil {
		v.digests = map[types.NamespacedName]verifiedDigest{}
	}
	v.digests[client.ObjectKeyFromObject(d)] = verifiedDigest{applied, digest}
	return nil
}

func (v *verifiedChildren) forget(key types.NamespacedName) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.digests, key)
}

// write sends the apply request u of the child desired (create: one that
// only creates) and returns the child as the API server stored it.
func (r *WorkerPoolReconciler) write(ctx context.Context, pool *v1.WorkerPool, desired client.Object, u *unstructured.Unstructured, create bool) (client.Object, error) {
	kind := kindOf(desired)
	written, err := r.applyRequest(ctx, desired, u, create)
	if create && apierrors.IsConflict(err) {
		// Something holds the name. Whose is it?
		probe := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: desired.GetObjectKind().GroupVersionKind().GroupVersion().String(), Kind: kind}}
		switch err := r.apiReader().Get(ctx, client.ObjectKeyFromObject(desired), probe); {
		case err == nil && !metav1.IsControlledBy(probe, pool):
			return nil, conflict(kind, probe, pool)
		case err != nil && !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("get %s %s: %w", kind, desired.GetName(), err)
		}
		// The pool's own child that the cache does not hold (it lost the
		// labels the cache selects, or the cache is behind), or one deleted
		// since: apply it as any other.
		written, err = r.applyRequest(ctx, desired, u, false)
	}
	if err != nil {
		return nil, classifyWriteError(kind, desired.GetName(), err)
	}
	r.Metrics.childWrite(pool, kind, "applied")
	ctrl.LoggerFrom(ctx).V(1).Info("child applied", "kind", kind, "name", desired.GetName())
	return written, nil
}

// createOnlyVersion is the resourceVersion precondition of an apply that
// must only create. The API server drops it from an object that an apply
// creates (it wipes server-set metadata, as a create does), and refuses the
// apply with a conflict when any object holds the name, because no object
// has this version (etcd numbers its first write 2). The check that the
// name is free and the create are thus one atomic request: nothing created
// in between can be taken over.
const createOnlyVersion = "1"

// applyRequest sends the server-side apply request u of the child desired
// (one that only creates when create is set) and returns the child as the
// API server stored it: generation and status included, so that the pass
// computes the pool's status from what the next pass will find in the
// cache, and does not write the status twice for one change. The request
// goes as a raw apply patch through the typed client, so the response is
// read in the API server's binary encoding straight into the child's type
// (an unstructured apply would decode it from JSON and convert it again).
func (r *WorkerPoolReconciler) applyRequest(ctx context.Context, desired client.Object, u *unstructured.Unstructured, create bool) (client.Object, error) {
	if create {
		u.SetResourceVersion(createOnlyVersion)
		defer u.SetResourceVersion("")
	}
	body, err := u.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("%s %s as an apply request: %w", kindOf(desired), desired.GetName(), err)
	}
	written := reflect.New(reflect.TypeOf(desired).Elem()).Interface().(client.Object)
	written.SetNamespace(desired.GetNamespace())
	written.SetName(desired.GetName())
	if err := r.Patch(ctx, written, client.RawPatch(types.ApplyPatchType, body), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return nil, err
	}
	return written, nil
}

// legacyFieldManagers are the field managers under which earlier versions
// of the operator wrote children with plain updates: the manager binary's
// name (the API server's default, from the user agent) and FieldOwner.
var legacyFieldManagers = sets.New("manager", FieldOwner)

// adoptUpdatedFields moves the fields an earlier version of the operator
// wrote to a child with plain updates over to its server-side apply field
// manager. Fields owned by an update are not released when an apply stops
// setting them, so without this a field removed from the spec would stay on
// a child made before the upgrade. It runs once per such child (the next
// apply marks it with the applied hash).
func (r *WorkerPoolReconciler) adoptUpdatedFields(ctx context.Context, pool *v1.WorkerPool, live client.Object) error {
	full := live.DeepCopyObject().(client.Object)
	if err := r.apiReader().Get(ctx, client.ObjectKeyFromObject(live), full); err != nil {
		return fmt.Errorf("get %s %s: %w", kindOf(live), live.GetName(), err)
	}
	patch, err := csaupgrade.UpgradeManagedFieldsPatch(full, legacyFieldManagers, FieldOwner)
	if err != nil || patch == nil {
		return err
	}
	if err := r.Patch(ctx, full, client.RawPatch(types.JSONPatchType, patch)); err != nil {
		return classifyWriteError(kindOf(live), live.GetName(), fmt.Errorf("take over field ownership: %w", err))
	}
	r.Metrics.childWrite(pool, kindOf(live), "adopted")
	ctrl.LoggerFrom(ctx).Info("took over the fields an earlier operator version updated", "kind", kindOf(live), "name", live.GetName())
	return nil
}

// apiReader reads past the cache (the manager's API reader), or through the
// client when none is set.
func (r *WorkerPoolReconciler) apiReader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

// conflict reports that obj, which holds the name of one of the pool's
// children, is not the pool's.
func conflict(kind string, obj client.Object, pool *v1.WorkerPool) error {
	owner := "no controller"
	if ref := metav1.GetControllerOf(obj); ref != nil {
		owner = fmt.Sprintf("controlled by %s %s", ref.Kind, ref.Name)
		if ref.Kind == "WorkerPool" && ref.Name == pool.Name {
			owner = "controlled by an earlier WorkerPool of this name (being garbage-collected)"
		}
	}
	return &blockedError{Reason: v1.ReasonChildConflict, Message: fmt.Sprintf(
		"%s %s/%s exists and is not this pool's (%s): rename or delete it, and the pool will create its own",
		kind, obj.GetNamespace(), obj.GetName(), owner)}
}

// classifyWriteError tells a refusal that retrying cannot fix (RBAC, an
// admission webhook or a quota; an object the API server finds invalid)
// from one that may pass.
func classifyWriteError(kind, name string, err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return &blockedError{Reason: v1.ReasonForbidden, Message: fmt.Sprintf("writing %s %s was refused: %v", kind, name, err)}
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return &blockedError{Reason: v1.ReasonInvalidSpec, Message: fmt.Sprintf("the API server refused %s %s rendered from the spec: %v", kind, name, err)}
	}
	return fmt.Errorf("apply %s %s: %w", kind, name, err)
}

// stampAppliedHash records, in the child's applied-hash annotation, the
// hash of the child as planned, and returns it.
func stampAppliedHash(desired client.Object) string {
	hash := hashOf(desired)
	desired.SetAnnotations(withAnnotation(desired.GetAnnotations(), v1.AppliedHashAnnotation, hash))
	return hash
}

func withAnnotation(in map[string]string, key, value string) map[string]string {
	out := make(map[string]string, len(in)+1)
	for k, v := range in {
		out[k] = v
	}
	out[key] = value
	return out
}

// applyConfiguration is the desired object as a server-side apply request:
// every field the operator sets and nothing else (no status, no creation
// timestamps, which the typed object would send as null).
func applyConfiguration(o client.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, fmt.Errorf("%s %s as an apply request: %w", kindOf(o), o.GetName(), err)
	}
	delete(m, "status")
	unstructured.RemoveNestedField(m, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(m, "spec", "template", "metadata", "creationTimestamp")
	return &unstructured.Unstructured{Object: m}, nil
}

// unchanged says whether live still holds every value of the apply
// request. The request carries only the fields the operator sets: a zero
// value the API server defaults (a probe's successThreshold) is absent from
// it, so defaulted fields are ignored, and so are fields other managers
// added. A field removed from the plan is caught by the applied hash instead.
// The fields the cache does not hold (cacheOmits) are not compared.
func unchanged(request *unstructured.Unstructured, live client.Object) bool {
	have, err := runtime.DefaultUnstructuredConverter.ToUnstructured(live)
	if err != nil {
		return false
	}
	omitted := cacheOmits[kindOf(live)]
	for k, v := range request.Object {
		if k != "apiVersion" && k != "kind" && !slices.Contains(omitted, k) && !holds(v, have[k]) {
			return false
		}
	}
	return true
}

// holds says whether have holds every value of want: maps key by key; lists
// of named elements (containers, env, volumes, ports) element by element,
// matched by name, extra elements allowed; other lists whole; other values
// equal.
func holds(want, have any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, _ := have.(map[string]any)
		for k, v := range w {
			if !holds(v, h[k]) {
				return false
			}
		}
		return true
	case []any:
		h, _ := have.([]any)
		if !named(w) && len(h) != len(w) {
			return false
		}
		for i, wv := range w {
			hv := any(nil)
			if named(w) {
				hv = byName(h, wv.(map[string]any)["name"])
			} else {
				hv = h[i]
			}
			if !holds(wv, hv) {
				return false
			}
		}
		return true
	}
	return want == have
}

// named says whether a list's elements are objects keyed by name.
func named(list []any) bool {
	for _, e := range list {
		if m, ok := e.(map[string]any); !ok || m["name"] == nil {
			return false
		}
	}
	return len(list) > 0
}

func byName(list []any, name any) any {
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}

// deleteIfOwned deletes obj (found by name in the cache) if the pool
// controls it.
func (r *WorkerPoolReconciler) deleteIfOwned(ctx context.Context, pool *v1.WorkerPool, obj client.Object) error {
	switch err := r.Get(ctx, client.ObjectKeyFromObject(obj), obj); {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("get %s %s: %w", kindOf(obj), obj.GetName(), err)
	case !metav1.IsControlledBy(obj, pool):
		return nil // not ours: leave it
	}
	return r.deleteOwned(ctx, pool, obj)
}

// deleteOwned deletes a child the pool controls, as read: a newer object
// of the same name (another UID) is left alone.
func (r *WorkerPoolReconciler) deleteOwned(ctx context.Context, pool *v1.WorkerPool, obj client.Object) error {
	uid := obj.GetUID()
	if err := r.Delete(ctx, obj, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
		return classifyWriteError(kindOf(obj), obj.GetName(), fmt.Errorf("delete: %w", err))
	}
	r.Metrics.childWrite(pool, kindOf(obj), "deleted")
	ctrl.LoggerFrom(ctx).Info("child deleted", "kind", kindOf(obj), "name", obj.GetName())
	return nil
}

// pruneConfigMaps deletes the pool's worker.toml ConfigMaps that are neither
// current nor mounted by the Deployment or any of its ReplicaSets: pods of
// an older ReplicaSet keep their file until the ReplicaSet is gone (rolled
// back to, or dropped from the Deployment's revision history).
func (r *WorkerPoolReconciler) pruneConfigMaps(ctx context.Context, pool *v1.WorkerPool, current string, dep *appsv1.Deployment) error {
	cms := &corev1.ConfigMapList{}
	if err := r.listOfPool(ctx, cms, pool); err != nil {
		return fmt.Errorf("list ConfigMaps: %w", err)
	}
	if len(cms.Items) <= 1 {
		return nil
	}
	inUse := map[string]bool{current: true}
	if dep != nil {
		mountedConfigMaps(dep.Spec.Template.Spec, inUse)
		rss := &appsv1.ReplicaSetList{}
		if err := r.listOfPool(ctx, rss, pool); err != nil {
			return fmt.Errorf("list ReplicaSets: %w", err)
		}
		for i := range rss.Items {
			if metav1.IsControlledBy(&rss.Items[i], dep) {
				mountedConfigMaps(rss.Items[i].Spec.Template.Spec, inUse)
			}
		}
	}
	for i := range cms.Items {
		cm := &cms.Items[i]
		if inUse[cm.Name] || !metav1.IsControlledBy(cm, pool) {
			continue
		}
		if err := r.deleteOwned(ctx, pool, cm); err != nil {
			return err
		}
	}
	return nil
}

func mountedConfigMaps(spec corev1.PodSpec, into map[string]bool) {
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			into[v.ConfigMap.Name] = true
		}
	}
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
	if k := o.GetObjectKind().GroupVersionKind().Kind; k != "" {
		return k
	}
	return fmt.Sprintf("%T", o)
}
