package envtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/scale"
	"k8s.io/client-go/util/retry"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
)

// ownedBy fails unless obj's controller is the pool, with blockOwnerDeletion
// so that deleting the pool garbage-collects it.
func ownedBy(t *testing.T, obj client.Object, wp *v1.WorkerPool) {
	t.Helper()
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.UID != wp.UID || ref.Kind != "WorkerPool" || ref.APIVersion != v1.GroupVersion.String() ||
		ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		t.Errorf("%T %s: controller reference %+v, want the pool %s", obj, obj.GetName(), ref, wp.UID)
	}
}

// The operator creates the pool's children with the expected fields, each
// owned by the pool.
func TestChildrenOfAPool(t *testing.T) {
	wp := operatedPool("children")
	wp.Spec.Replicas = ptr(int32(3))
	wp.Spec.FFI.Enabled = true
	wp.Spec.Dispatch.MaxConcurrentHandlers = 24
	wp.Spec.Drain.Timeout = "45s"
	wp.Spec.PodLabels = map[string]string{"team": "payments"}
	wp.Spec.PodAnnotations = map[string]string{"example.com/scrape": "true"}
	wp.Spec.Env = []corev1.EnvVar{{Name: "HANDLER_MODULE", Value: "pay.handlers"}}
	wp.Spec.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")}}
	wp.Spec.NodeSelector = map[string]string{"pool": "workers"}
	wp.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "workers", Effect: corev1.TaintEffectNoSchedule}}
	wp.Spec.ServiceAccountName = "payments-worker"
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}

	cm := mountedConfigMap(t, wp)
	ownedBy(t, cm, wp)
	if !strings.HasPrefix(cm.Name, "children-config-") || cm.Immutable == nil || !*cm.Immutable {
		t.Errorf("ConfigMap %s immutable=%v, want children-config-<hash>, immutable", cm.Name, cm.Immutable)
	}
	cfgFile, err := config.Parse([]byte(cm.Data["worker.toml"]))
	if err != nil {
		t.Fatalf("the worker refuses the rendered worker.toml: %v", err)
	}
	if w := cfgFile.Worker; w.MPSCChannels.HandlerDispatch.MaxConcurrentHandlers != 24 || !w.MPSCChannels.FFIDispatch.Enabled ||
		w.Drain.TimeoutMS != 45000 || w.Queue.Namespaces[0] != "payments" || w.MPSCChannels.HandlerDispatch.SaturationWarningThreshold != 0.8 {
		t.Errorf("worker.toml does not follow the spec: %+v", w)
	}

	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "children", Namespace: operatedNS}}
	waitForChild(t, dep)
	ownedBy(t, dep, wp)
	if *dep.Spec.Replicas != 3 || dep.Spec.Selector.MatchLabels[v1.PoolLabel] != "children" || len(dep.Spec.Selector.MatchLabels) != 1 {
		t.Errorf("replicas %d selector %v", *dep.Spec.Replicas, dep.Spec.Selector)
	}
	tpl := dep.Spec.Template
	if tpl.Labels[v1.PoolLabel] != "children" || tpl.Labels["team"] != "payments" || tpl.Annotations["example.com/scrape"] != "true" ||
		len(tpl.Annotations[v1.ConfigHashAnnotation]) != 16 {
		t.Errorf("template metadata %+v", tpl.ObjectMeta)
	}
	ps := tpl.Spec
	if *ps.TerminationGracePeriodSeconds != 60 || ps.ServiceAccountName != "payments-worker" || ps.NodeSelector["pool"] != "workers" ||
		len(ps.Tolerations) != 1 || ps.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || !*ps.SecurityContext.RunAsNonRoot {
		t.Errorf("pod spec %+v", ps)
	}
	c := ps.Containers[0]
	if c.Image != "tasker-worker:dev" || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 9090 ||
		c.LivenessProbe.HTTPGet.Path != "/livez" || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
		c.LivenessProbe.HTTPGet.Port.StrVal != "metrics" || c.Resources.Requests.Cpu().String() != "250m" {
		t.Errorf("container %+v", c)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if env["DATABASE_URL"].ValueFrom.SecretKeyRef.Name != "db" || env["DATABASE_URL"].ValueFrom.SecretKeyRef.Key != "url" ||
		env["TASKER_CONFIG_PATH"].Value != "/etc/tasker/worker.toml" || env["POD_NAME"].ValueFrom.FieldRef.FieldPath != "metadata.name" ||
		env["HANDLER_MODULE"].Value != "pay.handlers" {
		t.Errorf("env %+v", c.Env)
	}
	if sc := c.SecurityContext; *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("container security context %+v", sc)
	}

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "children", Namespace: operatedNS}}
	waitForChild(t, svc)
	ownedBy(t, svc, wp)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != 9090 ||
		svc.Spec.Selector[v1.PoolLabel] != "children" {
		t.Errorf("service %+v", svc.Spec)
	}
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "children", Namespace: operatedNS}}
	waitForChild(t, pdb)
	ownedBy(t, pdb, wp)
	if pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.Selector.MatchLabels[v1.PoolLabel] != "children" ||
		pdb.Spec.UnhealthyPodEvictionPolicy == nil || *pdb.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
		t.Errorf("pdb %+v", pdb.Spec)
	}

	// The pool is unchanged from here on: the next passes (one every
	// status interval) must find every child as the API server stored it,
	// defaults included, and write nothing.
	labels := map[string]string{"namespace": operatedNS, "workerpool": "children"}
	var writes, passes float64
	eventually(t, "children settled", 20*time.Second, func() (bool, string) {
		w, p := sumOperatorMetric(t, "workerpool_child_writes_total", labels), sumOperatorMetric(t, "workerpool_reconciles_total", labels)
		settled := p > passes && w == writes && w >= 4
		writes, passes = w, p
		return settled, fmt.Sprintf("%v writes after %v passes", w, p)
	})
	eventually(t, "three more passes", 20*time.Second, func() (bool, string) {
		p := sumOperatorMetric(t, "workerpool_reconciles_total", labels)
		return p >= passes+3, fmt.Sprint(p)
	})
	if w := sumOperatorMetric(t, "workerpool_child_writes_total", labels); w != writes {
		t.Errorf("an unchanged pool's children were written again: %v writes, %v before", w, writes)
	}
}

// A configuration change writes worker.toml into a new ConfigMap, named
// after its content, and the pod template mounts it, so the Deployment rolls
// the pods; a change that does not touch the file (replicas) leaves the
// template alone. The old ConfigMap stays while a ReplicaSet still mounts it
// (its pods may restart mid-rollout, or it may be rolled back to), and goes
// once none does.
func TestConfigChangeRollsThePods(t *testing.T) {
	wp := operatedPool("rolling")
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "rolling", Namespace: operatedNS}}
	waitForChild(t, dep)
	before := dep.Spec.Template.Annotations[v1.ConfigHashAnnotation]
	oldCM := mountedConfigMap(t, wp)
	// The Deployment controller's ReplicaSet of this template mounts it.
	rs := replicaSetOf(t, dep)

	update(t, wp, func(w *v1.WorkerPool) { w.Spec.Replicas = ptr(int32(2)) })
	eventually(t, "replicas follow the spec", 20*time.Second, func() (bool, string) {
		_ = k8s.Get(ctx(t), keyOf(dep), dep)
		return *dep.Spec.Replicas == 2, fmt.Sprint(*dep.Spec.Replicas)
	})
	if got := dep.Spec.Template.Annotations[v1.ConfigHashAnnotation]; got != before {
		t.Fatalf("a replica change changed the config hash %s → %s", before, got)
	}
	genBefore := dep.Generation

	update(t, wp, func(w *v1.WorkerPool) { w.Spec.Dispatch.HandlerTimeout = "45s" })
	eventually(t, "config hash changes", 20*time.Second, func() (bool, string) {
		_ = k8s.Get(ctx(t), keyOf(dep), dep)
		return dep.Spec.Template.Annotations[v1.ConfigHashAnnotation] != before, dep.Spec.Template.Annotations[v1.ConfigHashAnnotation]
	})
	cm := mountedConfigMap(t, wp)
	if cm.Name == oldCM.Name || !strings.Contains(cm.Data["worker.toml"], "handler_timeout_ms = 45000") {
		t.Errorf("new ConfigMap %s (old %s):\n%s", cm.Name, oldCM.Name, cm.Data["worker.toml"])
	}
	if dep.Generation != genBefore+1 {
		t.Errorf("Deployment generation %d → %d: the template was written more than once", genBefore, dep.Generation)
	}
	// Several passes later the old file is still there, unchanged: its
	// ReplicaSet's pods may still read it.
	waitPasses(t, wp, 3)
	kept := &corev1.ConfigMap{}
	if err := k8s.Get(ctx(t), keyOf(oldCM), kept); err != nil {
		t.Fatalf("the old ConfigMap went while a ReplicaSet mounts it: %v", err)
	}
	if kept.Data["worker.toml"] != oldCM.Data["worker.toml"] {
		t.Error("the old ConfigMap was changed in place")
	}
	// The ReplicaSet leaves the revision history: so does the old file.
	if err := k8s.Delete(ctx(t), rs); err != nil {
		t.Fatal(err)
	}
	eventually(t, "old ConfigMap removed", 20*time.Second, func() (bool, string) {
		err := k8s.Get(ctx(t), keyOf(oldCM), &corev1.ConfigMap{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	if err := k8s.Get(ctx(t), keyOf(cm), &corev1.ConfigMap{}); err != nil {
		t.Errorf("the current ConfigMap: %v", err)
	}
}

// replicaSetOf plays the Deployment controller: a ReplicaSet of dep's
// current template (envtest runs no controllers).
func replicaSetOf(t *testing.T, dep *appsv1.Deployment) *appsv1.ReplicaSet {
	t.Helper()
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: dep.Name + "-1", Namespace: dep.Namespace, Labels: dep.Spec.Template.Labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(dep, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
		Spec: appsv1.ReplicaSetSpec{Replicas: dep.Spec.Replicas, Selector: dep.Spec.Selector, Template: dep.Spec.Template},
	}
	if err := k8s.Create(ctx(t), rs); err != nil {
		t.Fatal(err)
	}
	return rs
}

// waitPasses waits until the operator computed the pool's status n more
// times.
func waitPasses(t *testing.T, wp *v1.WorkerPool, n float64) {
	t.Helper()
	labels := map[string]string{"namespace": wp.Namespace, "workerpool": wp.Name}
	start := sumOperatorMetric(t, "workerpool_reconciles_total", labels)
	eventually(t, fmt.Sprintf("%v more passes", n), 20*time.Second, func() (bool, string) {
		p := sumOperatorMetric(t, "workerpool_reconciles_total", labels)
		return p >= start+n, fmt.Sprint(p)
	})
}

// Removing a field from the spec removes it from the pods, because the
// operator owns what it applied (server-side apply); what other tools set on
// the Deployment stays.
func TestFieldRemovalReachesTheDeployment(t *testing.T) {
	wp := operatedPool("removal")
	wp.Spec.Env = []corev1.EnvVar{{Name: "FOO", Value: "1"}}
	wp.Spec.Command = []string{"/bin/worker"}
	wp.Spec.Args = []string{"run", "--verbose"}
	wp.Spec.PodAnnotations = map[string]string{"example.com/team": "payments"}
	wp.Spec.NodeSelector = map[string]string{"pool": "workers"}
	wp.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}
	wp.Spec.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}}
	wp.Spec.ServiceAccountName = "payments-worker"
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "removal", Namespace: operatedNS}}
	eventually(t, "every field on the Deployment", 20*time.Second, func() (bool, string) {
		if err := k8s.Get(ctx(t), keyOf(dep), dep); err != nil {
			return false, err.Error()
		}
		c := dep.Spec.Template.Spec.Containers[0]
		return len(c.Command) == 1 && dep.Spec.Template.Spec.ServiceAccountName == "payments-worker", fmt.Sprintf("%+v", c)
	})
	// Another tool annotates the Deployment and its template (as kubectl
	// rollout restart does), with its own field manager.
	other := &appsv1.Deployment{}
	if err := k8s.Get(ctx(t), keyOf(dep), other); err != nil {
		t.Fatal(err)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx(t), keyOf(dep), other); err != nil {
			return err
		}
		metav1.SetMetaDataAnnotation(&other.ObjectMeta, "example.com/owner", "platform-team")
		metav1.SetMetaDataAnnotation(&other.Spec.Template.ObjectMeta, "kubectl.kubernetes.io/restartedAt", "2026-12-06T10:00:00Z")
		return k8s.Update(ctx(t), other, client.FieldOwner("kubectl-rollout"))
	})
	if err != nil {
		t.Fatal(err)
	}

	update(t, wp, func(w *v1.WorkerPool) {
		w.Spec.Env = nil
		w.Spec.Command, w.Spec.Args, w.Spec.PodAnnotations, w.Spec.NodeSelector, w.Spec.Tolerations = nil, nil, nil, nil, nil
		w.Spec.Resources = corev1.ResourceRequirements{}
		w.Spec.ServiceAccountName = ""
	})
	eventually(t, "removed fields leave the Deployment", 20*time.Second, func() (bool, string) {
		if err := k8s.Get(ctx(t), keyOf(dep), dep); err != nil {
			return false, err.Error()
		}
		ps := dep.Spec.Template.Spec
		c := ps.Containers[0]
		var left []string
		for _, e := range c.Env {
			if e.Name == "FOO" {
				left = append(left, "env FOO")
			}
		}
		if len(c.Command) > 0 || len(c.Args) > 0 {
			left = append(left, "command/args")
		}
		if _, ok := dep.Spec.Template.Annotations["example.com/team"]; ok {
			left = append(left, "pod annotation")
		}
		if len(ps.NodeSelector) > 0 || len(ps.Tolerations) > 0 {
			left = append(left, "nodeSelector/tolerations")
		}
		if len(c.Resources.Limits) > 0 {
			left = append(left, "resource limits")
		}
		if ps.ServiceAccountName != "" && ps.ServiceAccountName != "default" {
			left = append(left, "serviceAccountName "+ps.ServiceAccountName)
		}
		return len(left) == 0, fmt.Sprint("still there: ", left)
	})
	if c := dep.Spec.Template.Spec.Containers[0]; len(c.Env) != 3 || c.Env[0].Name != "DATABASE_URL" {
		t.Errorf("the operator's own env went too: %+v", c.Env)
	}
	if dep.Annotations["example.com/owner"] != "platform-team" || dep.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] == "" {
		t.Errorf("another tool's annotations were removed: %v %v", dep.Annotations, dep.Spec.Template.Annotations)
	}
}

// A pool whose children an earlier version of the operator wrote with plain
// updates (before server-side apply) still loses a removed field: the
// operator takes over the fields those updates own.
func TestUpgradeFromUpdateOwnedChildren(t *testing.T) {
	wp := operatedPool("upgraded")
	wp.Spec.Dispatch.HandlerTimeout = "1500us" // refused: the operator writes no child yet
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	waitForStatus(t, wp, "Stalled InvalidSpec", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionStalled).Reason == v1.ReasonInvalidSpec
	})
	// The Deployment as the earlier operator left it: created and updated by
	// the manager binary (its field manager is the binary's name), with an
	// env var the spec has since dropped.
	labels := map[string]string{v1.PoolLabel: "upgraded", "app.kubernetes.io/managed-by": "workerpool-operator"}
	old := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "upgraded", Namespace: operatedNS, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(wp, v1.GroupVersion.WithKind("WorkerPool"))}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{v1.PoolLabel: "upgraded"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "worker", Image: "tasker-worker:dev", Env: []corev1.EnvVar{{Name: "FOO", Value: "1"}}}}}},
		},
	}
	if err := k8s.Create(ctx(t), old, client.FieldOwner("manager")); err != nil {
		t.Fatal(err)
	}
	update(t, wp, func(w *v1.WorkerPool) { w.Spec.Dispatch.HandlerTimeout = "45s" })
	dep := &appsv1.Deployment{}
	eventually(t, "the Deployment applied by this operator", 20*time.Second, func() (bool, string) {
		if err := k8s.Get(ctx(t), keyOf(old), dep); err != nil {
			return false, err.Error()
		}
		return dep.Annotations[v1.AppliedHashAnnotation] != "", fmt.Sprint(dep.Annotations)
	})
	for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "FOO" {
			t.Errorf("env FOO, which the spec does not have, stayed on the Deployment: %+v", dep.Spec.Template.Spec.Containers[0].Env)
		}
	}
	for _, m := range dep.ManagedFields {
		if m.Manager == "manager" {
			t.Errorf("the earlier operator's field manager still owns fields: %+v", m)
		}
	}
}

// An object the operator does not own that holds a child's name is never
// taken over: the pool is Stalled (ChildConflict) naming it, with its
// generation observed, and kstatus says Failed. Once it is gone the pool
// creates its own.
func TestChildConflictIsStalled(t *testing.T) {
	foreign := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: operatedNS, Labels: map[string]string{"app": "other"}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}, Selector: map[string]string{"app": "other"}}}
	if err := k8s.Create(ctx(t), foreign); err != nil {
		t.Fatal(err)
	}
	wp := operatedPool("taken")
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	got := waitForStatus(t, wp, "Stalled ChildConflict", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionStalled).Reason == v1.ReasonChildConflict
	})
	s := condition(got, v1.ConditionStalled)
	if s.Status != metav1.ConditionTrue || !strings.Contains(s.Message, "Service operated/taken exists and is not this pool's (no controller)") ||
		got.Status.ObservedGeneration != got.Generation || s.ObservedGeneration != got.Generation {
		t.Errorf("Stalled %+v, observedGeneration %d of %d", s, got.Status.ObservedGeneration, got.Generation)
	}
	if r := condition(got, v1.ConditionReady); r.Status != metav1.ConditionFalse || r.Reason != v1.ReasonChildConflict {
		t.Errorf("Ready %+v", r)
	}
	if res := kstatusOf(t, wp); res.Status != kstatus.FailedStatus || !strings.Contains(res.Message, "Service operated/taken") {
		t.Errorf("kstatus %s: %s", res.Status, res.Message)
	}
	waitForEvent(t, wp, v1.ReasonChildConflict, corev1.EventTypeWarning)
	svc := &corev1.Service{}
	if err := k8s.Get(ctx(t), keyOf(foreign), svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.OwnerReferences) != 0 || svc.Spec.Selector["app"] != "other" || svc.Labels[v1.PoolLabel] != "" {
		t.Errorf("the foreign Service was taken over: %+v", svc)
	}

	if err := k8s.Delete(ctx(t), foreign); err != nil {
		t.Fatal(err)
	}
	waitForStatus(t, wp, "Stalled clears", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionStalled).Status == metav1.ConditionFalse
	})
	own := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: operatedNS}}
	waitForChild(t, own)
	ownedBy(t, own, wp)
	waitForEvent(t, wp, "StalledCleared", corev1.EventTypeNormal)
}

// A spec the schema accepts but the worker would refuse is reported on
// Ready, naming the field, and no pods are created from it.
func TestSpecTheWorkerWouldRefuse(t *testing.T) {
	wp := operatedPool("refused")
	wp.Spec.Dispatch.HandlerTimeout = "1500us"
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	got := waitForStatus(t, wp, "Ready=False InvalidSpec", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionReady).Reason == v1.ReasonInvalidSpec
	})
	if c := condition(got, v1.ConditionReady); c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "spec.dispatch.handlerTimeout") {
		t.Errorf("Ready %+v", c)
	}
	err := k8s.Get(ctx(t), client.ObjectKey{Namespace: operatedNS, Name: "refused"}, &appsv1.Deployment{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("a Deployment exists for a refused spec: %v", err)
	}
}

// /scale drives spec.replicas (as kubectl scale and the HPA do), the
// Deployment follows, and the PodDisruptionBudget exists only above one replica.
func TestScaleThroughTheScaleClient(t *testing.T) {
	wp := operatedPool("scaled")
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	scales, err := scale.NewForConfig(cfg, mapper, dynamic.LegacyAPIPathResolverFunc, scale.NewDiscoveryScaleKindResolver(dc))
	if err != nil {
		t.Fatal(err)
	}
	gr := schema.GroupResource{Group: v1.GroupVersion.Group, Resource: "workerpools"}
	var s *autoscalingv1.Scale
	eventually(t, "scale shows the selector", 20*time.Second, func() (bool, string) {
		got, err := scales.Scales(operatedNS).Get(ctx(t), gr, "scaled", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		s = got
		return got.Status.Selector == "workers.tasker.dev/pool=scaled", fmt.Sprintf("%+v", got.Status)
	})
	if s.Spec.Replicas != 1 {
		t.Fatalf("scale spec %+v", s.Spec)
	}
	scaleTo(t, scales, gr, "scaled", 4)
	if got := getPool(t, wp); *got.Spec.Replicas != 4 {
		t.Fatalf("spec.replicas %d after scaling to 4", *got.Spec.Replicas)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "scaled", Namespace: operatedNS}}
	eventually(t, "Deployment scaled to 4", 20*time.Second, func() (bool, string) {
		if err := k8s.Get(ctx(t), keyOf(dep), dep); err != nil {
			return false, err.Error()
		}
		return *dep.Spec.Replicas == 4, fmt.Sprint(*dep.Spec.Replicas)
	})
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "scaled", Namespace: operatedNS}}
	waitForChild(t, pdb)

	scaleTo(t, scales, gr, "scaled", 1)
	eventually(t, "PodDisruptionBudget removed at one replica", 20*time.Second, func() (bool, string) {
		err := k8s.Get(ctx(t), keyOf(pdb), &policyv1.PodDisruptionBudget{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// scaleTo sets replicas through the scale subresource as kubectl scale
// and an autoscaler do, retrying when the operator's status write got in
// between the read and the write.
func scaleTo(t *testing.T, scales scale.ScalesGetter, gr schema.GroupResource, name string, replicas int32) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := scales.Scales(operatedNS).Get(ctx(t), gr, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Spec.Replicas = replicas
		_, err = scales.Scales(operatedNS).Update(ctx(t), gr, s, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("scale %s to %d: %v", name, replicas, err)
	}
}

// update applies mutate to the stored pool, retrying on conflicts with the
// operator's status writes.
func update(t *testing.T, wp *v1.WorkerPool, mutate func(*v1.WorkerPool)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx(t), keyOf(wp), wp); err != nil {
			return err
		}
		mutate(wp)
		return k8s.Update(ctx(t), wp)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// table asks the API server for the pool as kubectl get prints it, so the
// printer columns' JSONPaths are resolved by the server on a real status.
func table(t *testing.T, wp *v1.WorkerPool) map[string]any {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1.GroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rc.Get().Namespace(wp.Namespace).Resource("workerpools").Name(wp.Name).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").Do(context.Background()).Raw()
	if err != nil {
		t.Fatal(err)
	}
	var tbl metav1.Table
	if err := json.Unmarshal(raw, &tbl); err != nil {
		t.Fatal(err)
	}
	if len(tbl.Rows) != 1 {
		t.Fatalf("table rows %d", len(tbl.Rows))
	}
	out := map[string]any{}
	for i, col := range tbl.ColumnDefinitions {
		out[col.Name] = tbl.Rows[0].Cells[i]
	}
	return out
}

// Everything spec.template sets reaches the Deployment, merged with the
// operator's worker; removing the template removes it all again and brings
// back the operator's restricted defaults.
func TestTemplateReachesTheDeployment(t *testing.T) {
	wp := operatedPool("templated")
	wp.Spec.Template = &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "scoring"}, Annotations: map[string]string{"example.com/owner": "ml"}},
		Spec: corev1.PodSpec{
			ImagePullSecrets:          []corev1.LocalObjectReference{{Name: "registry"}},
			PriorityClassName:         "batch",
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{v1.PoolLabel: "templated"}}}},
			SecurityContext:           &corev1.PodSecurityContext{RunAsUser: ptr(int64(1000)), RunAsNonRoot: ptr(true)},
			InitContainers: []corev1.Container{
				{Name: "fetch-handlers", Image: "busybox:1", Command: []string{"cp", "-r", "/src/.", "/app/"}},
				{Name: "proxy", Image: "envoy:1", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways)},
			},
			Containers: []corev1.Container{{Name: "worker",
				Env:          []corev1.EnvVar{{Name: "HANDLERS", Value: "/app"}},
				VolumeMounts: []corev1.VolumeMount{{Name: "handlers", MountPath: "/app"}},
				StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("metrics")}}, FailureThreshold: 30},
				Lifecycle:    &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 3}}},
			}},
			Volumes: []corev1.Volume{{Name: "handlers", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "templated", Namespace: operatedNS}}
	worker := func() corev1.Container {
		for _, c := range dep.Spec.Template.Spec.Containers {
			if c.Name == "worker" {
				return c
			}
		}
		return corev1.Container{}
	}
	eventually(t, "the template on the Deployment", 20*time.Second, func() (bool, string) {
		if err := k8s.Get(ctx(t), keyOf(dep), dep); err != nil {
			return false, err.Error()
		}
		return len(dep.Spec.Template.Spec.InitContainers) == 2, fmt.Sprintf("%+v", dep.Spec.Template.Spec)
	})
	tpl, ps, w := dep.Spec.Template, dep.Spec.Template.Spec, worker()
	for what, ok := range map[string]bool{
		"label":                tpl.Labels["app"] == "scoring" && tpl.Labels[v1.PoolLabel] == "templated",
		"annotation":           tpl.Annotations["example.com/owner"] == "ml",
		"image pull secret":    len(ps.ImagePullSecrets) == 1 && ps.ImagePullSecrets[0].Name == "registry",
		"priority class":       ps.PriorityClassName == "batch",
		"topology spread":      len(ps.TopologySpreadConstraints) == 1,
		"pod security context": ps.SecurityContext != nil && *ps.SecurityContext.RunAsUser == 1000 && ps.SecurityContext.FSGroup == nil,
		"init container and native sidecar": ps.InitContainers[0].Name == "fetch-handlers" && ps.InitContainers[1].RestartPolicy != nil &&
			*ps.InitContainers[1].RestartPolicy == corev1.ContainerRestartPolicyAlways,
		"the image from spec.image":      w.Image == "tasker-worker:dev",
		"startup probe":                  w.StartupProbe != nil && w.StartupProbe.FailureThreshold == 30,
		"lifecycle hook":                 w.Lifecycle != nil && w.Lifecycle.PreStop != nil,
		"extra env beside the worker's":  len(w.Env) == 4 && w.Env[0].Name == "DATABASE_URL" && w.Env[3].Name == "HANDLERS",
		"extra mount beside worker.toml": len(w.VolumeMounts) == 3,
		"metrics port":                   w.Ports[0].Name == "metrics" && w.Ports[0].ContainerPort == 9090,
	} {
		if !ok {
			t.Errorf("%s: not on the Deployment: %+v", what, ps)
		}
	}

	update(t, wp, func(w *v1.WorkerPool) { w.Spec.Template = nil })
	eventually(t, "the template's fields gone", 20*time.Second, func() (bool, string) {
		if err := k8s.Get(ctx(t), keyOf(dep), dep); err != nil {
			return false, err.Error()
		}
		ps, w := dep.Spec.Template.Spec, worker()
		left := []string{}
		if len(ps.InitContainers) > 0 || len(ps.ImagePullSecrets) > 0 || ps.PriorityClassName != "" || len(ps.TopologySpreadConstraints) > 0 {
			left = append(left, "pod fields")
		}
		if w.StartupProbe != nil || w.Lifecycle != nil || len(w.Env) != 3 || len(w.VolumeMounts) != 2 || len(ps.Volumes) != 2 {
			left = append(left, "worker fields")
		}
		if dep.Spec.Template.Labels["app"] != "" || dep.Spec.Template.Annotations["example.com/owner"] != "" {
			left = append(left, "metadata")
		}
		if ps.SecurityContext == nil || ps.SecurityContext.RunAsUser == nil || *ps.SecurityContext.RunAsUser != 65532 {
			left = append(left, "not the restricted default security context")
		}
		return len(left) == 0, fmt.Sprint(left)
	})
}

// spec.suspend takes the pool to zero pods and keeps everything else; the
// status says Suspended (Ready, so kstatus and kubectl wait see the spec
// realised); resuming restores the replica count.
func TestSuspendAndResume(t *testing.T) {
	wp := operatedPool("paused")
	wp.Spec.Replicas = ptr(int32(2))
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	rollOut(t, wp, 2)
	pods := []*corev1.Pod{
		addPod(t, wp, "paused-0", startEndpoint(t, "127.0.0.81").Addr),
		addPod(t, wp, "paused-1", startEndpoint(t, "127.0.0.82").Addr),
	}
	waitForStatus(t, wp, "Ready", func(w *v1.WorkerPool) bool { return condition(w, v1.ConditionReady).Reason == v1.ReasonPoolReady })
	cm := mountedConfigMap(t, wp)

	update(t, wp, func(w *v1.WorkerPool) { w.Spec.Suspend = true })
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "paused", Namespace: operatedNS}}
	eventually(t, "Deployment scaled to zero", 20*time.Second, func() (bool, string) {
		_ = k8s.Get(ctx(t), keyOf(dep), dep)
		return *dep.Spec.Replicas == 0, fmt.Sprint(*dep.Spec.Replicas)
	})
	// The Deployment controller's part: the pods go.
	rollOut(t, wp, 0)
	for _, p := range pods {
		if err := k8s.Delete(ctx(t), p); err != nil {
			t.Fatal(err)
		}
	}
	got := waitForStatus(t, wp, "Suspended", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionReconciling).Reason == v1.ReasonSuspended
	})
	if c := condition(got, v1.ConditionReady); c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonSuspended || !strings.Contains(c.Message, "suspended") {
		t.Errorf("Ready while suspended: %+v", c)
	}
	if cells := table(t, got); cells["Reason"] != "Suspended" {
		t.Errorf("kubectl get columns %v", cells)
	}
	if res := kstatusOf(t, wp); res.Status != kstatus.CurrentStatus {
		t.Errorf("kstatus of a suspended pool %s (%s)", res.Status, res.Message)
	}
	if err := k8s.Get(ctx(t), keyOf(cm), &corev1.ConfigMap{}); err != nil {
		t.Errorf("the pool's worker.toml went while suspended: %v", err)
	}
	if err := k8s.Get(ctx(t), client.ObjectKey{Namespace: operatedNS, Name: "paused"}, &corev1.Service{}); err != nil {
		t.Errorf("the pool's Service went while suspended: %v", err)
	}

	update(t, wp, func(w *v1.WorkerPool) { w.Spec.Suspend = false })
	eventually(t, "replicas restored", 20*time.Second, func() (bool, string) {
		_ = k8s.Get(ctx(t), keyOf(dep), dep)
		return *dep.Spec.Replicas == 2, fmt.Sprint(*dep.Spec.Replicas)
	})
	got = waitForStatus(t, wp, "resuming", func(w *v1.WorkerPool) bool { return w.Status.ObservedGeneration == w.Generation })
	if c := condition(got, v1.ConditionReady); c.Reason == v1.ReasonSuspended {
		t.Errorf("still Suspended after resuming: %+v", c)
	}
}
