package controllers

import (
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// RenderApplyRequests returns the pool's children (at the spec's replica count) as the server-side apply
// requests the operator sends for them (field manager FieldOwner, forced):
// the same objects, applied hashes and owner references, in the order the
// operator applies them. It lets a benchmark make the operator's writes
// directly, to tell the API server's cost of those writes from the
// operator's own. An error means the spec cannot be rendered; it names the
// field.
func RenderApplyRequests(pool *v1.WorkerPool) ([]*unstructured.Unstructured, error) {
	plan, err := planChildren(pool, specReplicas(pool))
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, o := range plan.objects() {
		stampAppliedHash(o)
		u, err := applyConfiguration(o)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// FirstStatus is the status the operator computes for pool from its
// Deployment as the API server stored it, before any pod exists: what a new
// pool's first pass writes.
func FirstStatus(pool *v1.WorkerPool, dep *appsv1.Deployment) v1.WorkerPoolStatus {
	return computeStatus(pool, observation{Deployment: dep})
}
