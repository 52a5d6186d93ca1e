package envtest

import (
	"context"
	"net"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// The operator's cache holds its pools, children and pods without what it
// never reads (managed fields, which server-side apply fills for every
// field; for pods, all but what the status needs), while the API server
// keeps them whole.
func TestOperatorCacheHoldsWhatItReads(t *testing.T) {
	wp := operatedPool("cached")
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	pod := addPod(t, wp, "cached-0", &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9})
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: wp.Name, Namespace: wp.Namespace}}
	waitForChild(t, dep)

	cachedPod := &corev1.Pod{}
	eventually(t, "the operator caches the pod as ready", 20*time.Second, func() (bool, string) {
		if err := operatorCache.Get(context.Background(), keyOf(pod), cachedPod); err != nil {
			return false, err.Error()
		}
		return cachedPod.Status.PodIP == "127.0.0.1", cachedPod.Status.PodIP
	})
	cachedDep, cachedPool := &appsv1.Deployment{}, &v1.WorkerPool{}
	for _, get := range []struct {
		from client.Reader
		obj  client.Object
	}{{operatorCache, cachedDep}, {operatorCache, cachedPool}, {k8s, pod}, {k8s, wp}} {
		key := keyOf(dep)
		if _, isPod := get.obj.(*corev1.Pod); isPod {
			key = keyOf(pod)
		}
		if err := get.from.Get(context.Background(), key, get.obj); err != nil {
			t.Fatal(err)
		}
	}
	for kind, objs := range map[string][2]client.Object{
		"Deployment": {dep, cachedDep}, "WorkerPool": {wp, cachedPool}, "Pod": {pod, cachedPod},
	} {
		if live, cached := len(objs[0].GetManagedFields()), len(objs[1].GetManagedFields()); live == 0 || cached != 0 {
			t.Errorf("%s: %d managed fields entries on the API server, %d in the operator's cache; want some, none", kind, live, cached)
		}
	}
	// The Deployment's pod template is cached as its digest (compared with
	// the plan), its hash and the ConfigMap it mounts; the digest is the
	// cache's alone.
	if tmpl := cachedDep.Spec.Template; len(tmpl.Spec.Containers) != 0 || tmpl.Annotations[v1.TemplateHashAnnotation] == "" ||
		len(tmpl.Spec.Volumes) != 1 || tmpl.Spec.Volumes[0].ConfigMap == nil || cachedDep.Annotations[v1.AppliedHashAnnotation] == "" ||
		cachedDep.Annotations["workers.tasker.dev/cached-digest"] == "" {
		t.Errorf("the cached Deployment: %+v, template %+v", cachedDep.ObjectMeta, tmpl)
	}
	if dep.Spec.Template.Spec.Containers[0].Image != wp.Spec.Image || dep.Annotations["workers.tasker.dev/cached-digest"] != "" {
		t.Errorf("the Deployment on the API server: %+v, template %+v", dep.ObjectMeta, dep.Spec.Template)
	}
	if c := cachedPod.Spec.Containers[0]; c.Image != "" || len(c.Ports) != 1 || c.Ports[0].Name != v1.MetricsPortName ||
		cachedPod.Annotations[v1.TemplateHashAnnotation] == "" || cachedPod.Labels[v1.PoolLabel] != wp.Name {
		t.Errorf("cached pod: %+v %+v", cachedPod.ObjectMeta, c)
	}
}
