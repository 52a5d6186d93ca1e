package controllers

import (
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// managedFieldsOf is what server-side apply records for an object: large,
// and never read from the cache.
func managedFieldsOf(manager string) []metav1.ManagedFieldsEntry {
	return []metav1.ManagedFieldsEntry{{Manager: manager, Operation: metav1.ManagedFieldsOperationApply, APIVersion: "v1",
		FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{"f:a":{},"f:b":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"worker\"}":{".":{},"f:image":{},"f:env":{}}}}}`)}}}
}

// fullPod is a pod as the API server serves it: everything a kubelet and
// the admission chain put there, around what the operator reads.
func fullPod(name string, mutate func(*corev1.Pod)) *corev1.Pod {
	now := metav1.NewTime(time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC))
	p := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: "uid-1", ResourceVersion: "42", GenerateName: "payments-6d9c-",
			CreationTimestamp: now, Labels: map[string]string{v1.PoolLabel: "payments", "pod-template-hash": "6d9c", "team": "pay"},
			Annotations: map[string]string{v1.TemplateHashAnnotation: "t1", v1.ConfigHashAnnotation: "c1",
				"example.com/sidecar-status":       `{"containers":["proxy"],"volumes":["a","b","c"],"imagePullSecrets":null}`,
				corev1.LastAppliedConfigAnnotation: `{"apiVersion":"v1","kind":"Pod"}`},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "payments-6d9c", UID: "rs", Controller: ptr.To(true)}},
			ManagedFields:   managedFieldsOf("kubelet"),
		},
		Spec: corev1.PodSpec{
			NodeName: "node-1", ServiceAccountName: "payments",
			InitContainers: []corev1.Container{{Name: "migrate", Image: "registry.example/migrate:v1"}},
			Containers: []corev1.Container{
				{Name: "worker", Image: "registry.example/tasker-worker:v9",
					Env:            []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "url"}}}},
					Ports:          []corev1.ContainerPort{{Name: "debug", ContainerPort: 6060}, {Name: v1.MetricsPortName, ContainerPort: 9191, Protocol: corev1.ProtocolTCP}},
					Resources:      corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("metrics")}}},
					VolumeMounts:   []corev1.VolumeMount{{Name: "config", MountPath: "/etc/tasker"}}},
				{Name: "proxy", Image: "registry.example/proxy:v1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 15001}}},
			},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "payments-config-c1"}}}}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "10.1.2.3", PodIPs: []corev1.PodIP{{IP: "10.1.2.3"}}, HostIP: "192.168.0.4", StartTime: &now,
			QOSClass: corev1.PodQOSBurstable,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			},
			InitContainerStatuses: []corev1.ContainerStatus{{Name: "migrate", Image: "registry.example/migrate:v1", ImageID: "sha256:aaaa", ContainerID: "containerd://1",
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}}}},
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "worker", Image: "registry.example/tasker-worker:v9", ImageID: "sha256:bbbb", ContainerID: "containerd://2", Ready: true, Started: ptr.To(true),
					State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}},
				{Name: "proxy", Image: "registry.example/proxy:v1", ImageID: "sha256:cccc", ContainerID: "containerd://3", Ready: true, Started: ptr.To(true),
					State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}},
			},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

// podsOfEveryKind are pods in each state the status tells apart.
func podsOfEveryKind() []*corev1.Pod {
	deleted := metav1.NewTime(time.Date(2026, 12, 6, 11, 0, 0, 0, time.UTC))
	notReady := func(p *corev1.Pod) { p.Status.Conditions[1].Status = corev1.ConditionFalse }
	return []*corev1.Pod{
		fullPod("ready", nil),
		fullPod("running-not-ready", notReady),
		fullPod("crash-loop", func(p *corev1.Pod) {
			notReady(p)
			cs := &p.Status.ContainerStatuses[0]
			cs.Ready, cs.RestartCount = false, 5
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s restarting failed container"}}
			cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled", Message: " out of memory\n", StartedAt: deleted}}
		}),
		fullPod("image-pull-on-init", func(p *corev1.Pod) {
			notReady(p)
			p.Status.Phase = corev1.PodPending
			p.Status.InitContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: `Back-off pulling image "registry.example/migrate:v1"`}}
		}),
		fullPod("config-error", func(p *corev1.Pod) {
			notReady(p)
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: `secret "db" not found`}}
		}),
		fullPod("unschedulable", func(p *corev1.Pod) {
			p.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes are available: 3 Insufficient cpu."}}}
		}),
		fullPod("terminating", func(p *corev1.Pod) { p.DeletionTimestamp = &deleted }),
		fullPod("succeeded", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		fullPod("no-metrics-port", func(p *corev1.Pod) { p.Spec.Containers[0].Ports = p.Spec.Containers[0].Ports[:1] }),
		fullPod("old-template", func(p *corev1.Pod) { p.Annotations[v1.TemplateHashAnnotation] = "t0" }),
	}
}

func slimPod(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	out, err := podForStatus(p.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	return out.(*corev1.Pod)
}

// The cached pod is a fraction of the pod, and everything the status, the
// scrape and the pod watch read of it is the same as on the full pod.
func TestPodForStatusKeepsWhatTheStatusReads(t *testing.T) {
	pods := podsOfEveryKind()
	changed := podStateChanged()
	for _, full := range pods {
		t.Run(full.Name, func(t *testing.T) {
			slim := slimPod(t, full)
			if a, b := diagnosePod(full), diagnosePod(slim); a != b {
				t.Errorf("diagnosePod: %+v, cached %+v", a, b)
			}
			if podReady(full) != podReady(slim) || containersRunning(full) != containersRunning(slim) {
				t.Errorf("ready %v running %v, cached ready %v running %v", podReady(full), containersRunning(full), podReady(slim), containersRunning(slim))
			}
			ta, ea := targetFor(full)
			tb, eb := targetFor(slim)
			if ta != tb || (ea == nil) != (eb == nil) {
				t.Errorf("targetFor: %v %v, cached %v %v", ta, ea, tb, eb)
			}
			if !reflect.DeepEqual(podToPool(t.Context(), full), podToPool(t.Context(), slim)) {
				t.Error("the pod maps to another pool once cached")
			}
			if full.Annotations[v1.TemplateHashAnnotation] != slim.Annotations[v1.TemplateHashAnnotation] ||
				full.Status.Phase != slim.Status.Phase || !equality.Semantic.DeepEqual(full.DeletionTimestamp, slim.DeletionTimestamp) ||
				!reflect.DeepEqual(full.OwnerReferences, slim.OwnerReferences) || !reflect.DeepEqual(full.Labels, slim.Labels) ||
				full.Name != slim.Name || full.Namespace != slim.Namespace || full.UID != slim.UID || full.ResourceVersion != slim.ResourceVersion {
				t.Errorf("metadata or phase differ once cached:\n%+v\n%+v", full.ObjectMeta, slim.ObjectMeta)
			}
			// The watch lets the same updates through between cached pods as
			// between full ones, from every other kind of pod to this one.
			for _, from := range pods {
				want := changed.Update(event.UpdateEvent{ObjectOld: from, ObjectNew: full})
				if got := changed.Update(event.UpdateEvent{ObjectOld: slimPod(t, from), ObjectNew: slim}); got != want {
					t.Errorf("update from %s: cached pods say changed=%v, full pods %v", from.Name, got, want)
				}
			}
			if again := slimPod(t, slim); !equality.Semantic.DeepEqual(again, slim) {
				t.Errorf("not idempotent:\n%+v\n%+v", slim, again)
			}
			if slim.ManagedFields != nil || slim.Annotations[corev1.LastAppliedConfigAnnotation] != "" || slim.Annotations["example.com/sidecar-status"] != "" {
				t.Errorf("cached pod keeps what the operator never reads: %+v", slim.ObjectMeta)
			}
			// Sizes as the API server sends them (protobuf). A pod in a real
			// cluster carries more than this one (kubelet managed fields,
			// more env and volumes), so saves more.
			if slim.Size()*2 > full.Size() {
				t.Errorf("cached pod is %d bytes, the pod %d: want at most half", slim.Size(), full.Size())
			}
		})
	}
}

// Children and pools lose only their managed fields and kubectl's
// last-applied annotation (ConfigMaps their data too): the plan comparisons
// and the status read the rest as it is.
func TestDropUnreadKeepsTheRest(t *testing.T) {
	pool := testPool()
	pool.Spec.Image = "registry.example/tasker-worker:v9"
	plan, err := planChildren(pool, specReplicas(pool))
	if err != nil {
		t.Fatal(err)
	}
	plan.PDB = desiredPDB(pool, specReplicas(pool))
	for _, desired := range append(plan.objects(), pool) {
		t.Run(kindOf(desired), func(t *testing.T) {
			if o, ok := desired.(client.Object); ok {
				stampAppliedHash(o)
			}
			live := desired.DeepCopyObject().(client.Object)
			if d, ok := live.(*appsv1.Deployment); ok {
				d.Status = rolledOut(2).Status
			}
			live.SetAnnotations(withAnnotation(live.GetAnnotations(), corev1.LastAppliedConfigAnnotation, `{"kind":"x"}`))
			live.SetManagedFields(managedFieldsOf(FieldOwner))
			want := live.DeepCopyObject().(client.Object)
			want.SetManagedFields(nil)
			annotations := want.GetAnnotations()
			delete(annotations, corev1.LastAppliedConfigAnnotation)
			want.SetAnnotations(annotations)
			transform := dropUnread
			if cm, ok := want.(*corev1.ConfigMap); ok {
				// Immutable and named by its content's hash: the name says what the data is.
				cm.Data = nil
				transform = configMapWithoutData
			}

			got, err := transform(live)
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(got, want) {
				t.Errorf("cached:\n%+v\nwant:\n%+v", got, want)
			}
			if _, isPool := desired.(*v1.WorkerPool); !isPool {
				request, err := applyConfiguration(desired.(client.Object))
				if err != nil {
					t.Fatal(err)
				}
				if !unchanged(request, got.(client.Object)) {
					t.Error("the cached child no longer compares unchanged with its plan")
				}
			}
		})
	}
}

// Every informer the operator starts cuts its objects down.
func TestCacheOptionsTransformEveryType(t *testing.T) {
	opts := CacheOptions(nil)
	if opts.DefaultTransform == nil {
		t.Error("no default transform: WorkerPools are cached with their managed fields")
	}
	want := map[reflect.Type]bool{}
	for _, o := range []client.Object{&corev1.Pod{}, &corev1.ConfigMap{}, &corev1.Service{}, &appsv1.Deployment{}, &appsv1.ReplicaSet{}, &policyv1.PodDisruptionBudget{}} {
		want[reflect.TypeOf(o)] = true
	}
	for o, by := range opts.ByObject {
		if by.Transform == nil {
			t.Errorf("%T is cached whole", o)
		}
		delete(want, reflect.TypeOf(o))
	}
	for typ := range want {
		t.Errorf("%v has no cache options", typ)
	}
	for o, by := range opts.ByObject {
		if _, ok := o.(*corev1.ConfigMap); ok {
			cached, err := by.Transform(&corev1.ConfigMap{Data: map[string]string{configFileName: "[worker]"}, BinaryData: map[string][]byte{"b": {1}}})
			if err != nil {
				t.Fatal(err)
			}
			if cm := cached.(*corev1.ConfigMap); cm.Data != nil || cm.BinaryData != nil {
				t.Errorf("cached ConfigMaps keep their data: %+v", cm)
			}
		}
	}
}

// fullDeployment is a pool's Deployment as the API server serves it.
func fullDeployment() *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: "shop", ResourceVersion: "7", Generation: 2,
			Labels:          map[string]string{managedByLabel: managedBy, v1.PoolLabel: "payments"},
			Annotations:     map[string]string{v1.AppliedHashAnnotation: "a1", corev1.LastAppliedConfigAnnotation: "{}"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "workers.tasker.dev/v1alpha1", Kind: "WorkerPool", Name: "payments", UID: "p", Controller: ptr.To(true)}},
			ManagedFields:   managedFieldsOf(FieldOwner),
		},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{v1.PoolLabel: "payments"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{v1.PoolLabel: "payments"},
					Annotations: map[string]string{v1.TemplateHashAnnotation: "t1", "example.com/team": "pay"}},
				Spec: fullPod("template", nil).Spec,
			},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, ReadyReplicas: 3},
	}
}

func cachedDeployment(t *testing.T, d *appsv1.Deployment) *appsv1.Deployment {
	t.Helper()
	out, err := deploymentForCache(d.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	return out.(*appsv1.Deployment)
}

// A cached Deployment keeps what the status and the ConfigMap pruning read
// (the template's hash, the ConfigMaps it mounts, replicas, status) and,
// instead of its pod template, a digest of what the plan is compared with:
// the same for the same Deployment whatever its status or version, and
// another when anything the operator sets changes.
func TestDeploymentForCacheKeepsADigestForThePodTemplate(t *testing.T) {
	full := fullDeployment()
	cached := cachedDeployment(t, full)
	tmpl := cached.Spec.Template
	if len(tmpl.Spec.Containers) != 0 || len(tmpl.Spec.InitContainers) != 0 || tmpl.Labels != nil {
		t.Errorf("the cached pod template keeps containers or labels: %+v", tmpl)
	}
	if tmpl.Annotations[v1.TemplateHashAnnotation] != "t1" || len(tmpl.Annotations) != 1 {
		t.Errorf("cached template annotations %v, want the template hash alone", tmpl.Annotations)
	}
	mounted := map[string]bool{}
	mountedConfigMaps(tmpl.Spec, mounted)
	if !mounted["payments-config-c1"] || len(tmpl.Spec.Volumes) != 1 {
		t.Errorf("cached volumes %+v, want the config ConfigMap", tmpl.Spec.Volumes)
	}
	if *cached.Spec.Replicas != 3 || cached.Status.ReadyReplicas != 3 || cached.ManagedFields != nil ||
		cached.Annotations[corev1.LastAppliedConfigAnnotation] != "" || cached.Annotations[v1.AppliedHashAnnotation] != "a1" {
		t.Errorf("cached Deployment %+v %+v", cached.ObjectMeta, cached.Status)
	}
	digest := cached.Annotations[cachedDigestAnnotation]
	if want, err := deploymentDigest(full); err != nil || digest == "" || digest != want {
		t.Fatalf("cached digest %q, want the full Deployment's %q (%v)", digest, want, err)
	}

	for name, mutate := range map[string]func(*appsv1.Deployment){
		"status":          func(d *appsv1.Deployment) { d.Status.ReadyReplicas, d.Status.ObservedGeneration = 1, 3 },
		"resourceVersion": func(d *appsv1.Deployment) { d.ResourceVersion, d.Generation = "8", 3 },
		"managed fields":  func(d *appsv1.Deployment) { d.ManagedFields = managedFieldsOf("kubectl") },
	} {
		d := fullDeployment()
		mutate(d)
		if got := cachedDeployment(t, d).Annotations[cachedDigestAnnotation]; got != digest {
			t.Errorf("a change of %s changed the digest", name)
		}
	}
	for name, mutate := range map[string]func(*appsv1.Deployment){
		"image": func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Image = "registry.example/tasker-worker:v10"
		},
		"env":        func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Env = nil },
		"replicas":   func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To[int32](4) },
		"label":      func(d *appsv1.Deployment) { delete(d.Labels, managedByLabel) },
		"annotation": func(d *appsv1.Deployment) { d.Annotations[v1.AppliedHashAnnotation] = "a2" },
		"owner":      func(d *appsv1.Deployment) { d.OwnerReferences = nil },
		"template annotation": func(d *appsv1.Deployment) {
			d.Spec.Template.Annotations["example.com/team"] = "ops"
		},
	} {
		d := fullDeployment()
		mutate(d)
		if got := cachedDeployment(t, d).Annotations[cachedDigestAnnotation]; got == digest {
			t.Errorf("a change of the %s left the digest as it was", name)
		}
	}
}
