package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// CacheOptions limits the manager's informers to what the operator
// manages: pods carrying the pool label and children carrying the
// managed-by label. In a busy cluster this keeps the operator's memory
// proportional to its pools instead of to every pod and ConfigMap.
// Each cached object is also cut down to what the operator reads of it
// (see the transforms below). namespaces, when not empty, limits every
// informer to those namespaces.
func CacheOptions(namespaces []string) cache.Options {
	poolPods, _ := labels.NewRequirement(v1.PoolLabel, selection.Exists, nil)
	managed := labels.SelectorFromSet(labels.Set{managedByLabel: managedBy})
	opts := cache.Options{
		// WorkerPools (and any other type read later).
		DefaultTransform: dropUnread,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:                   {Label: labels.NewSelector().Add(*poolPods), Transform: podForStatus},
			&corev1.ConfigMap{}:             {Label: managed, Transform: configMapWithoutData},
			&corev1.Service{}:               {Label: managed, Transform: dropUnread},
			&appsv1.Deployment{}:            {Label: managed, Transform: deploymentForCache},
			&appsv1.ReplicaSet{}:            {Label: managed, Transform: replicaSetVolumesOnly},
			&policyv1.PodDisruptionBudget{}: {Label: managed, Transform: dropUnread},
		},
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// poolIndex is a cache index of pods, ConfigMaps and ReplicaSets by the pool
// they belong to (the value of their pool label). A pass lists its pool's
// objects through it: with a label selector alone the cache visits every
// object of the namespace, so with thousands of pools in one namespace each
// pass would cost time in proportion to the number of pools.
const poolIndex = "workers.tasker.dev/pool"

// indexByPool registers poolIndex with the manager's cache.
func indexByPool(ctx context.Context, indexer client.FieldIndexer) error {
	byPool := func(o client.Object) []string {
		if name, ok := o.GetLabels()[v1.PoolLabel]; ok {
			return []string{name}
		}
		return nil
	}
	for _, obj := range []client.Object{&corev1.Pod{}, &corev1.ConfigMap{}, &appsv1.ReplicaSet{}} {
		if err := indexer.IndexField(ctx, obj, poolIndex, byPool); err != nil {
			return fmt.Errorf("index %T by pool: %w", obj, err)
		}
	}
	return nil
}

// listOfPool lists the pool's objects of list's type from the cache.
func (r *WorkerPoolReconciler) listOfPool(ctx context.Context, list client.ObjectList, pool *v1.WorkerPool) error {
	return r.List(ctx, list, client.InNamespace(pool.Namespace), client.MatchingFields{poolIndex: pool.Name})
}

// dropUnread removes from a cached object the two parts the operator never
// reads from its cache and that can each be as large as the rest of the
// object: managedFields (which server-side apply fills for every field of a
// child; the one-time takeover of fields written by an older operator reads
// them past the cache) and kubectl's last-applied-configuration annotation
// (a copy of the whole object as last applied with kubectl apply). A status
// write of a pool read without them is safe: the API server keeps the stored
// managedFields when a request carries none, and a status update changes
// nothing but the status.
func dropUnread(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		if o.GetManagedFields() != nil {
			o.SetManagedFields(nil)
		}
		if a := o.GetAnnotations(); a != nil {
			delete(a, corev1.LastAppliedConfigAnnotation)
		}
	}
	return obj, nil
}

// configMapWithoutData drops a cached ConfigMap's data as well: the
// operator's ConfigMaps are immutable and named by the hash of their
// content (configMapName), so the name says what the data is, and a
// worker.toml is most of each ConfigMap's size (about 3 KB of 10 000 pools'
// cache each).
func configMapWithoutData(obj any) (any, error) {
	if cm, ok := obj.(*corev1.ConfigMap); ok {
		cm.Data, cm.BinaryData = nil, nil
	}
	return dropUnread(obj)
}

// cacheOmits are the fields of a child that its cache transform drops, so
// that comparing the plan with a cached child skips them.
var cacheOmits = map[string][]string{"ConfigMap": {"data", "binaryData"}}

// podForStatus keeps of a cached pod only what the operator reads: which
// pool and ReplicaSet it belongs to (labels, owners), the operator's own
// annotations (the pod template's hash), whether it is leaving
// (deletionTimestamp, phase), readiness and the scheduler's verdict
// (conditions), where to scrape it (IP, the container port named metrics),
// and what its containers' states say about why it does not run. A pod
// spec and status are many times that (env, volumes, probes, image IDs,
// managed fields), and a pool may have hundreds of pods.
func podForStatus(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return dropUnread(obj)
	}
	slim := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
			Labels: p.Labels, Annotations: operatorAnnotations(p.Annotations), OwnerReferences: p.OwnerReferences,
		},
		Status: corev1.PodStatus{
			Phase:                 p.Status.Phase,
			PodIP:                 p.Status.PodIP,
			InitContainerStatuses: slimContainerStatuses(p.Status.InitContainerStatuses),
			ContainerStatuses:     slimContainerStatuses(p.Status.ContainerStatuses),
		},
	}
	for _, c := range p.Spec.Containers {
		kept := corev1.Container{Name: c.Name}
		for _, port := range c.Ports {
			if port.Name == v1.MetricsPortName {
				kept.Ports = append(kept.Ports, corev1.ContainerPort{Name: port.Name, ContainerPort: port.ContainerPort, Protocol: port.Protocol})
			}
		}
		slim.Spec.Containers = append(slim.Spec.Containers, kept)
	}
	for _, c := range p.Status.Conditions {
		slim.Status.Conditions = append(slim.Status.Conditions,
			corev1.PodCondition{Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message})
	}
	return slim, nil
}

// operatorAnnotations are the annotations of the operator's own prefix.
func operatorAnnotations(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if strings.HasPrefix(k, v1.GroupVersion.Group+"/") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// slimContainerStatuses keeps what diagnosePod and containersRunning read:
// a container's name and image, its restarts, why it waits, that it runs,
// and how it last ended.
func slimContainerStatuses(in []corev1.ContainerStatus) []corev1.ContainerStatus {
	if in == nil {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(in))
	for i, cs := range in {
		out[i] = corev1.ContainerStatus{Name: cs.Name, Image: cs.Image, Ready: cs.Ready, RestartCount: cs.RestartCount,
			State: slimState(cs.State), LastTerminationState: slimState(cs.LastTerminationState)}
	}
	return out
}

func slimState(s corev1.ContainerState) corev1.ContainerState {
	var out corev1.ContainerState
	if w := s.Waiting; w != nil {
		out.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
	}
	if r := s.Running; r != nil {
		out.Running = &corev1.ContainerStateRunning{StartedAt: r.StartedAt}
	}
	if t := s.Terminated; t != nil {
		out.Terminated = &corev1.ContainerStateTerminated{ExitCode: t.ExitCode, Reason: t.Reason, Message: t.Message}
	}
	return out
}

// cachedDigestAnnotation exists only on Deployments in the operator's cache,
// never on the API server: a digest of the Deployment as stored
// (deploymentDigest), taken before its pod template was dropped.
const cachedDigestAnnotation = "workers.tasker.dev/cached-digest"

// deploymentForCache strips a cached Deployment's pod template to what the
// operator reads of it (its own annotations, among them the template's hash
// that pods are compared with, and the ConfigMaps it mounts) and records
// the digest of the Deployment as stored in cachedDigestAnnotation. The pod
// template is most of a Deployment (a third of the operator's cache at
// 10 000 pools); to tell whether a Deployment still holds the plan, the
// operator compares it whole once, read past the cache, and after that only
// its digest (see verifiedChildren).
func deploymentForCache(obj any) (any, error) {
	d, ok := obj.(*appsv1.Deployment)
	if !ok {
		return dropUnread(obj)
	}
	if _, err := dropUnread(d); err != nil {
		return nil, err
	}
	digest, err := deploymentDigest(d)
	if err != nil {
		return nil, err
	}
	d.Spec.Template = corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Annotations: operatorAnnotations(d.Spec.Template.Annotations)},
		Spec:       corev1.PodSpec{Volumes: configMapVolumes(d.Spec.Template.Spec)},
	}
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[cachedDigestAnnotation] = digest
	return d, nil
}

// deploymentDigest is a digest of what the operator compares with its plan
// of a Deployment: labels, annotations (less kubectl's last-applied copy
// and cachedDigestAnnotation), owners and spec. The protobuf encoding it
// hashes is deterministic (map keys sorted) and the same for a Deployment
// read from a watch, a GET or an apply response.
func deploymentDigest(d *appsv1.Deployment) (string, error) {
	annotations := make(map[string]string, len(d.Annotations))
	for k, v := range d.Annotations {
		if k != cachedDigestAnnotation && k != corev1.LastAppliedConfigAnnotation {
			annotations[k] = v
		}
	}
	compared := appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Labels: d.Labels, Annotations: annotations, OwnerReferences: d.OwnerReferences},
		Spec:       d.Spec,
	}
	b, err := compared.Marshal()
	if err != nil {
		return "", fmt.Errorf("digest of Deployment %s: %w", d.Name, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16]), nil
}

// replicaSetVolumesOnly strips a cached ReplicaSet to what the operator reads
// of it (which ConfigMaps its pods mount, and whose it is): a ReplicaSet
// carries a whole pod template, and a Deployment keeps ten of them.
func replicaSetVolumesOnly(obj any) (any, error) {
	rs, ok := obj.(*appsv1.ReplicaSet)
	if !ok {
		return obj, nil
	}
	rs.Spec.Template = corev1.PodTemplateSpec{Spec: corev1.PodSpec{Volumes: configMapVolumes(rs.Spec.Template.Spec)}}
	return dropUnread(rs)
}

// configMapVolumes are a pod spec's ConfigMap volumes (what pruneConfigMaps
// reads), without their other fields.
func configMapVolumes(spec corev1.PodSpec) []corev1.Volume {
	var volumes []corev1.Volume
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			volumes = append(volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{ConfigMap: v.ConfigMap}})
		}
	}
	return volumes
}
