package controllers

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
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
// namespaces, when not empty, limits every informer to those namespaces.
func CacheOptions(namespaces []string) cache.Options {
	poolPods, _ := labels.NewRequirement(v1.PoolLabel, selection.Exists, nil)
	managed := labels.SelectorFromSet(labels.Set{managedByLabel: managedBy})
	opts := cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:                   {Label: labels.NewSelector().Add(*poolPods)},
			&corev1.ConfigMap{}:             {Label: managed},
			&corev1.Service{}:               {Label: managed},
			&appsv1.Deployment{}:            {Label: managed},
			&appsv1.ReplicaSet{}:            {Label: managed, Transform: replicaSetVolumesOnly},
			&policyv1.PodDisruptionBudget{}: {Label: managed},
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

// replicaSetVolumesOnly strips a cached ReplicaSet to what the operator reads
// of it (which ConfigMaps its pods mount, and whose it is): a ReplicaSet
// carries a whole pod template, and a Deployment keeps ten of them.
func replicaSetVolumesOnly(obj any) (any, error) {
	rs, ok := obj.(*appsv1.ReplicaSet)
	if !ok {
		return obj, nil
	}
	var volumes []corev1.Volume
	for _, v := range rs.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			volumes = append(volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{ConfigMap: v.ConfigMap}})
		}
	}
	rs.ManagedFields = nil
	rs.Spec.Template = corev1.PodTemplateSpec{Spec: corev1.PodSpec{Volumes: volumes}}
	return rs, nil
}
