// Package v1alpha1 is the WorkerPool API: a declaration of a pool of Tasker
// step workers (image, queue, dispatch tuning, FFI settings, drain) and the
// status the operator writes back from what the pods measure.
// +kubebuilder:object:generate=true
// +groupName=workers.tasker.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of WorkerPool.
	GroupVersion = schema.GroupVersion{Group: "workers.tasker.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the API's types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the API's types to a scheme, for clients and managers.
	AddToScheme = SchemeBuilder.AddToScheme
)
