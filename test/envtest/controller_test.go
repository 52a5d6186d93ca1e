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
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/scale"
	"k8s.io/client-go/util/retry"
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

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "children-config", Namespace: operatedNS}}
	waitForChild(t, cm)
	ownedBy(t, cm, wp)
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
		c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
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
	mounted := false
	for _, v := range ps.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == "children-config" {
			mounted = true
		}
	}
	if !mounted {
		t.Error("worker.toml ConfigMap not mounted")
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
	if pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.Selector.MatchLabels[v1.PoolLabel] != "children" {
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

// A configuration change rewrites worker.toml and changes the hash on the
// pod template, so the Deployment rolls the pods; a change that does not
// touch the file (replicas) leaves the template alone.
func TestConfigChangeRollsThePods(t *testing.T) {
	wp := operatedPool("rolling")
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "rolling", Namespace: operatedNS}}
	waitForChild(t, dep)
	before := dep.Spec.Template.Annotations[v1.ConfigHashAnnotation]

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
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx(t), client.ObjectKey{Namespace: operatedNS, Name: "rolling-config"}, cm); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cm.Data["worker.toml"], "handler_timeout_ms = 45000") {
		t.Errorf("worker.toml not updated:\n%s", cm.Data["worker.toml"])
	}
	if dep.Generation != genBefore+1 {
		t.Errorf("Deployment generation %d → %d: the template was written more than once", genBefore, dep.Generation)
	}
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
