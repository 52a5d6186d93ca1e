package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Duration is a Go duration string ("30s", "500ms"). It is validated in the
// schema (pattern, and CEL duration() for positivity) because an unparseable
// duration stored in etcd would break every client that decodes the object.
// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
// +kubebuilder:validation:MaxLength=32
type Duration string

// WorkerPoolSpec declares a pool of Tasker step workers.
//
// Where a convenience field below and spec.template name the same thing, the
// two must agree: setting both to different values is refused, naming both.
// +kubebuilder:validation:XValidation:rule="has(self.image) || (has(self.template) && has(self.template.spec) && has(self.template.spec.containers) && self.template.spec.containers.exists(c, c.name == 'worker' && has(c.image)))",message="spec.image is required (or the image of the container named worker in spec.template)"
// +kubebuilder:validation:XValidation:rule="!has(self.image) || !has(self.template) || !has(self.template.spec) || !has(self.template.spec.containers) || self.template.spec.containers.all(c, c.name != 'worker' || !has(c.image) || c.image == self.image)",message="spec.image and the image of the worker container in spec.template differ: set it in one place"
// +kubebuilder:validation:XValidation:rule="!has(self.command) || !has(self.template) || !has(self.template.spec) || !has(self.template.spec.containers) || self.template.spec.containers.all(c, c.name != 'worker' || !has(c.command))",message="spec.command and the command of the worker container in spec.template are both set: set it in one place"
// +kubebuilder:validation:XValidation:rule="!has(self.args) || !has(self.template) || !has(self.template.spec) || !has(self.template.spec.containers) || self.template.spec.containers.all(c, c.name != 'worker' || !has(c.args))",message="spec.args and the args of the worker container in spec.template are both set: set them in one place"
// +kubebuilder:validation:XValidation:rule="!has(self.resources) || !(has(self.resources.limits) || has(self.resources.requests) || has(self.resources.claims)) || !has(self.template) || !has(self.template.spec) || !has(self.template.spec.containers) || self.template.spec.containers.all(c, c.name != 'worker' || !has(c.resources) || !(has(c.resources.limits) || has(c.resources.requests) || has(c.resources.claims)))",message="spec.resources and the resources of the worker container in spec.template are both set: set them in one place"
// +kubebuilder:validation:XValidation:rule="!has(self.serviceAccountName) || !has(self.template) || !has(self.template.spec) || !has(self.template.spec.serviceAccountName) || self.template.spec.serviceAccountName == self.serviceAccountName",message="spec.serviceAccountName and spec.template.spec.serviceAccountName differ: set it in one place"
// +kubebuilder:validation:XValidation:rule="!has(self.affinity) || !has(self.template) || !has(self.template.spec) || !has(self.template.spec.affinity)",message="spec.affinity and spec.template.spec.affinity are both set: set it in one place"
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !has(self.replicas) || self.replicas == 1",message="spec.replicas and spec.autoscaling are both set: with spec.autoscaling the operator sets the replica count (remove spec.replicas)"
type WorkerPoolSpec struct {
	// Replicas is the number of worker pods; also driven through /scale
	// (kubectl scale, an HPA, KEDA). Leave it unset with Autoscaling: its
	// default (1) is then ignored.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Image is the worker image (tasker-worker, or a runtime embedding
	// libtaskerworker). Required unless the container named worker in
	// Template sets it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the worker container.
	// +kubebuilder:default=IfNotPresent
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Command overrides the image's entrypoint (e.g. a Python or Ruby runtime).
	// +optional
	Command []string `json:"command,omitempty"`
	// Args are passed to the command.
	// +optional
	Args []string `json:"args,omitempty"`
	// Env adds environment variables to the worker container.
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`
	// Resources of the worker container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// NodeSelector, Tolerations and Affinity schedule the pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Tolerations of the worker pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// Affinity of the worker pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// ServiceAccountName the pods run as.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// PodLabels are added to the pods (the pool's selector label is always set).
	// +optional
	PodLabels map[string]string `json:"podLabels,omitempty"`
	// PodAnnotations are added to the pods.
	// +optional
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`

	// Autoscaling lets the operator set the replica count from the pool's
	// own queue and pods: the oldest ready step's wait, the backlog per
	// replica, the handlers' utilisation. Absent: spec.replicas.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// Suspend scales the pool to zero pods and keeps everything else: its
	// configuration, children and status. Setting it back to false restores
	// the replica count.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// Template is the pods' template, for everything the fields above do not
	// cover: image pull secrets, volumes and mounts, init containers and
	// sidecars, security contexts, scheduling (topology spread, priority
	// class), probes, lifecycle hooks. The operator merges its worker
	// container into the container named "worker" (adding it if absent) and
	// keeps whatever else the template sets; docs/operator.md has the rules.
	// +optional
	Template *corev1.PodTemplateSpec `json:"template,omitempty"`

	// Rollout tunes how the Deployment replaces pods on a template change.
	// +optional
	Rollout *RolloutSpec `json:"rollout,omitempty"`

	// Disruption is the pool's PodDisruptionBudget.
	// +optional
	Disruption *DisruptionSpec `json:"disruption,omitempty"`

	// Queue is the PostgreSQL step queue the pool consumes.
	Queue QueueSpec `json:"queue"`

	// Dispatch tunes the native dispatch core ([worker.mpsc_channels.handler_dispatch]).
	// +kubebuilder:default={}
	// +optional
	Dispatch DispatchSpec `json:"dispatch,omitempty"`

	// FFI tunes the channel foreign handlers poll ([worker.mpsc_channels.ffi_dispatch]).
	// +kubebuilder:default={}
	// +optional
	FFI FFISpec `json:"ffi,omitempty"`

	// Drain bounds the SIGTERM drain.
	// +kubebuilder:default={}
	// +optional
	Drain DrainSpec `json:"drain,omitempty"`
}

// AutoscalingSpec is the built-in autoscaler: the largest replica count any
// target asks for, within [minReplicas, maxReplicas], changed at most as fast
// as Behavior allows. docs/autoscaling.md describes every field.
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",message="spec.autoscaling.minReplicas must be at most spec.autoscaling.maxReplicas"
// +kubebuilder:validation:XValidation:rule="has(self.targetOldestReadyAge) || has(self.targetBacklogPerReplica) || has(self.targetUtilizationPercent)",message="spec.autoscaling needs at least one target: targetOldestReadyAge, targetBacklogPerReplica or targetUtilizationPercent"
type AutoscalingSpec struct {
	// MinReplicas is the fewest pods (default 1). 0 lets an idle pool scale
	// to zero (see behavior.scaleToZeroAfter); a ready step wakes it.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MinReplicas *int32 `json:"minReplicas,omitempty"`
	// MaxReplicas is the most pods.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxReplicas int32 `json:"maxReplicas"`
	// TargetOldestReadyAge: scale so that the oldest ready step of the
	// pool's queues waits about this long.
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.autoscaling.targetOldestReadyAge must be a positive duration such as 5s"
	// +optional
	TargetOldestReadyAge Duration `json:"targetOldestReadyAge,omitempty"`
	// TargetBacklogPerReplica: scale so that each pod has about this many
	// ready steps waiting.
	// +kubebuilder:validation:Minimum=1
	// +optional
	TargetBacklogPerReplica *int32 `json:"targetBacklogPerReplica,omitempty"`
	// TargetUtilizationPercent: scale so that the handlers in flight are
	// about this share of the ready pods' capacity (maxConcurrentHandlers
	// each). The pool is also never scaled in while above it.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	TargetUtilizationPercent *int32 `json:"targetUtilizationPercent,omitempty"`
	// Behavior limits how fast the count changes.
	// +optional
	Behavior *AutoscalingBehavior `json:"behavior,omitempty"`
}

// AutoscalingBehavior is the HPA's model: a stabilisation window and the
// largest step per period, for each direction.
type AutoscalingBehavior struct {
	// ScaleUp (default: no window; at most double, or add 4 pods, per 15s).
	// +optional
	ScaleUp *ScalingRules `json:"scaleUp,omitempty"`
	// ScaleDown (default: the largest count asked for in the last 2m; at
	// most halve per 30s).
	// +optional
	ScaleDown *ScalingRules `json:"scaleDown,omitempty"`
	// ScaleToZeroAfter is how long a pool with minReplicas 0 must be idle
	// (no ready step, nothing in flight) before it goes to zero (default 5m).
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="spec.autoscaling.behavior.scaleToZeroAfter must be a duration such as 5m"
	// +optional
	ScaleToZeroAfter Duration `json:"scaleToZeroAfter,omitempty"`
}

// ScalingRules are one direction's limits.
type ScalingRules struct {
	// StabilizationWindow: scaling up uses the smallest, scaling down the
	// largest count asked for within this window, so a brief dip or spike
	// does not move the pool.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('1h')",message="stabilizationWindow must be a duration between 0s and 1h"
	// +optional
	StabilizationWindow Duration `json:"stabilizationWindow,omitempty"`
	// Policies cap the change per period; the one allowing the largest
	// change applies. Empty: the direction's default.
	// +kubebuilder:validation:MaxItems=4
	// +listType=atomic
	// +optional
	Policies []ScalingPolicy `json:"policies,omitempty"`
}

// ScalingPolicy allows a change of Value pods, or Value percent of the
// count at the period's start, per Period.
type ScalingPolicy struct {
	// Type is Pods or Percent.
	// +kubebuilder:validation:Enum=Pods;Percent
	Type string `json:"type"`
	// Value is the number of pods or the percentage.
	// +kubebuilder:validation:Minimum=1
	Value int32 `json:"value"`
	// Period is how long the change is counted over (e.g. 15s).
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('30m')",message="period must be a duration between 1s and 30m"
	Period Duration `json:"period"`
}

// RolloutSpec is the Deployment's rolling update settings.
// +kubebuilder:validation:XValidation:rule="!has(self.maxSurge) || !has(self.maxUnavailable) || !(string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])",message="spec.rollout: maxSurge and maxUnavailable cannot both be 0"
type RolloutSpec struct {
	// MaxSurge is how many pods above the replica count may exist during a
	// rollout: a number or a percentage (default 25%).
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')",message="spec.rollout.maxSurge must be a non-negative number or a percentage such as 25%"
	// +optional
	MaxSurge *intstr.IntOrString `json:"maxSurge,omitempty"`
	// MaxUnavailable is how many pods may be unavailable during a rollout: a
	// number or a percentage (default 25%).
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')",message="spec.rollout.maxUnavailable must be a non-negative number or a percentage such as 25%"
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
	// MinReadySeconds is how long a new pod must be ready before it counts
	// as available.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	MinReadySeconds int32 `json:"minReadySeconds,omitempty"`
	// ProgressDeadlineSeconds is how long a rollout may make no progress
	// before the pool is Stalled with reason ProgressDeadlineExceeded
	// (default 600).
	// +kubebuilder:validation:Minimum=1
	// +optional
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`
}

// DisruptionSpec is the pool's PodDisruptionBudget: how many pods voluntary
// disruptions (node drains) may take down at once.
// +kubebuilder:validation:XValidation:rule="!(has(self.maxUnavailable) && has(self.minAvailable))",message="spec.disruption: set maxUnavailable or minAvailable, not both"
// +kubebuilder:validation:XValidation:rule="self.enabled || !(has(self.maxUnavailable) || has(self.minAvailable))",message="spec.disruption: maxUnavailable and minAvailable need enabled: true"
type DisruptionSpec struct {
	// Enabled: false gives the pool no PodDisruptionBudget at all.
	// +kubebuilder:default=true
	// +optional
	Enabled bool `json:"enabled"`
	// MaxUnavailable pods at most may be disrupted at once: a number or a
	// percentage. Without it or MinAvailable, the pool gets maxUnavailable 1
	// when it has more than one replica, and no budget with one.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')",message="spec.disruption.maxUnavailable must be a non-negative number or a percentage such as 25%"
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
	// MinAvailable pods at least must stay up: a number or a percentage.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')",message="spec.disruption.minAvailable must be a non-negative number or a percentage such as 50%"
	// +optional
	MinAvailable *intstr.IntOrString `json:"minAvailable,omitempty"`
	// UnhealthyPodEvictionPolicy: AlwaysAllow (the default) lets pods that
	// are not ready be evicted whatever the budget, so a crash-looping pool
	// never blocks a node drain; IfHealthyBudget only while the budget holds.
	// +kubebuilder:validation:Enum=AlwaysAllow;IfHealthyBudget
	// +kubebuilder:default=AlwaysAllow
	// +optional
	UnhealthyPodEvictionPolicy policyv1.UnhealthyPodEvictionPolicyType `json:"unhealthyPodEvictionPolicy,omitempty"`
}

// QueueSpec is [worker.queue].
type QueueSpec struct {
	// Namespaces are the step queues this pool consumes.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	Namespaces []QueueName `json:"namespaces"`
	// DatabaseSecretRef names the Secret key holding the PostgreSQL URL (DATABASE_URL).
	DatabaseSecretRef corev1.SecretKeySelector `json:"databaseSecretRef"`
	// VisibilityTimeout is how long a claimed step stays invisible to other workers.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 30s"
	// +optional
	VisibilityTimeout Duration `json:"visibilityTimeout,omitempty"`
	// BatchSize is the most steps claimed at once.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	BatchSize int32 `json:"batchSize,omitempty"`
	// PollInterval is the wait between polls that found nothing.
	// +kubebuilder:default="500ms"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 500ms"
	// +optional
	PollInterval Duration `json:"pollInterval,omitempty"`
}

// QueueName is a step queue (namespace) name.
// +kubebuilder:validation:Pattern=`^[a-z0-9][a-z0-9_-]*$`
// +kubebuilder:validation:MaxLength=63
type QueueName string

// DispatchSpec is [worker.mpsc_channels.handler_dispatch].
// The has() guards let the API server validate the block's own default ({})
// before nested defaults apply; stored objects always have both fields.
// +kubebuilder:validation:XValidation:rule="!has(self.saturationWarningPercent) || !has(self.saturationCriticalPercent) || self.saturationWarningPercent < self.saturationCriticalPercent",message="saturationWarningPercent must be below saturationCriticalPercent"
type DispatchSpec struct {
	// DispatchBufferSize bounds steps waiting for a handler.
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	DispatchBufferSize int32 `json:"dispatchBufferSize,omitempty"`
	// CompletionBufferSize bounds results waiting to be persisted.
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	CompletionBufferSize int32 `json:"completionBufferSize,omitempty"`
	// MaxConcurrentHandlers is the number of concurrency permits per pod.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxConcurrentHandlers int32 `json:"maxConcurrentHandlers,omitempty"`
	// HandlerTimeout bounds a handler unless the step carries its own timeout.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 30s"
	// +optional
	HandlerTimeout Duration `json:"handlerTimeout,omitempty"`
	// CompletionSendTimeout bounds how long a result waits for room in the completion channel.
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 10s"
	// +optional
	CompletionSendTimeout Duration `json:"completionSendTimeout,omitempty"`
	// SaturationWarningPercent: completion saturation at or above it sets Backpressure (Warning).
	// +kubebuilder:default=80
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	SaturationWarningPercent int32 `json:"saturationWarningPercent,omitempty"`
	// SaturationCriticalPercent: at or above it Backpressure's reason is Critical.
	// +kubebuilder:default=95
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	SaturationCriticalPercent int32 `json:"saturationCriticalPercent,omitempty"`
}

// CallbackStrategy is how long a completing thread waits for the post-handler callback.
// +kubebuilder:validation:Enum=Blocking;BlockingWithTimeout;FireAndForget
type CallbackStrategy string

// FFISpec is [worker.mpsc_channels.ffi_dispatch].
// The has() guards let the API server validate the block's own default ({})
// before nested defaults apply; stored objects always have these fields.
// +kubebuilder:validation:XValidation:rule="!has(self.starvationWarningThreshold) || !has(self.completionTimeout) || duration(self.starvationWarningThreshold) < duration(self.completionTimeout)",message="starvationWarningThreshold must be below completionTimeout"
// +kubebuilder:validation:XValidation:rule="!has(self.callbackStrategy) || self.callbackStrategy == 'Blocking' || (has(self.callbackTimeout) && duration(self.callbackTimeout) > duration('0s'))",message="callbackTimeout must be a positive duration unless callbackStrategy is Blocking"
type FFISpec struct {
	// Enabled makes foreign handlers (through libtaskerworker) consume the pool's steps.
	// +kubebuilder:default=false
	// +optional
	Enabled bool `json:"enabled"`
	// DispatchBufferSize bounds events waiting to be polled.
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	DispatchBufferSize int32 `json:"dispatchBufferSize,omitempty"`
	// CompletionTimeout turns a polled event that is not completed into an ffi_timeout failure.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 30s"
	// +optional
	CompletionTimeout Duration `json:"completionTimeout,omitempty"`
	// StarvationWarningThreshold: a pending event older than this is starving.
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 10s"
	// +optional
	StarvationWarningThreshold Duration `json:"starvationWarningThreshold,omitempty"`
	// CallbackTimeout bounds the post-handler callback (required unless Blocking).
	// +kubebuilder:default="5s"
	// +optional
	CallbackTimeout Duration `json:"callbackTimeout,omitempty"`
	// CallbackStrategy: Blocking, BlockingWithTimeout or FireAndForget.
	// +kubebuilder:default=FireAndForget
	// +optional
	CallbackStrategy CallbackStrategy `json:"callbackStrategy,omitempty"`
}

// DrainSpec is [worker.drain].
type DrainSpec struct {
	// Timeout is how long in-flight steps may finish after SIGTERM; the pods'
	// termination grace period is this plus a margin.
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be a positive duration such as 60s"
	// +optional
	Timeout Duration `json:"timeout,omitempty"`
}

// DispatchStatus aggregates the pods' dispatch cores.
type DispatchStatus struct {
	// InFlight is the handlers running across ready pods.
	InFlight int32 `json:"inFlight"`
	// Capacity is the permits across ready pods.
	Capacity int32 `json:"capacity"`
	// CompletionSaturationPercent is the highest completion-channel fill among pods.
	CompletionSaturationPercent int32 `json:"completionSaturationPercent"`
}

// FFIStatus aggregates the pods' FFI channels.
type FFIStatus struct {
	// PendingEvents is the FFI events polled and not completed, across pods.
	PendingEvents int32 `json:"pendingEvents"`
	// OldestPendingAge is the oldest pending event's age among pods.
	// +optional
	OldestPendingAge string `json:"oldestPendingAge,omitempty"`
	// StarvingEvents counts pending events older than the starvation threshold.
	StarvingEvents int32 `json:"starvingEvents"`
	// UnpolledEvents is the FFI events waiting to be polled, across pods.
	// +optional
	UnpolledEvents int32 `json:"unpolledEvents,omitempty"`
	// OldestUnpolledAge is how long the oldest event waiting to be polled has
	// waited, among pods: how long the foreign pollers have not polled.
	// +optional
	OldestUnpolledAge string `json:"oldestUnpolledAge,omitempty"`
}

// PodMetrics is one pod's view, for kubectl describe (worst first).
type PodMetrics struct {
	// Name of the pod.
	Name string `json:"name"`
	// Ready is the pod's readiness.
	Ready bool `json:"ready"`
	// InFlight is the pod's running handlers.
	InFlight int32 `json:"inFlight"`
	// PendingEvents is the pod's pending FFI events.
	PendingEvents int32 `json:"pendingEvents"`
	// OldestPendingAge is the pod's oldest pending FFI event's age.
	// +optional
	OldestPendingAge string `json:"oldestPendingAge,omitempty"`
	// OldestUnpolledAge is the age of the pod's oldest FFI event waiting to be polled.
	// +optional
	OldestUnpolledAge string `json:"oldestUnpolledAge,omitempty"`
	// CompletionSaturationPercent is the pod's completion-channel fill.
	CompletionSaturationPercent int32 `json:"completionSaturationPercent"`
	// ScrapeError says why the pod's metrics could not be read in the last
	// pass, so that kubectl describe shows which pod to look at and why. The
	// figures above are then the pod's last good sample, if it is recent.
	// +optional
	ScrapeError string `json:"scrapeError,omitempty"`
	// Problem is what keeps the pod from running, if anything: an image that
	// cannot be pulled, a missing Secret, a crash loop, no node to run on.
	// +optional
	Problem string `json:"problem,omitempty"`
}

// QueueStatus is the pool's queues as the operator measures them (once per
// queue, also when the pool has no pods).
type QueueStatus struct {
	// Backlog is the steps ready to be claimed now, over the pool's queues.
	// Counting stops at 100000 per queue (BacklogCapped): beyond that the
	// figure is a floor.
	Backlog int64 `json:"backlog"`
	// BacklogCapped says Backlog reached the count's limit.
	// +optional
	BacklogCapped bool `json:"backlogCapped,omitempty"`
	// OldestReadyAge is how long the oldest ready step has waited.
	// +optional
	OldestReadyAge string `json:"oldestReadyAge,omitempty"`
	// MeasuredAt is when the queue was read.
	// +optional
	MeasuredAt *metav1.Time `json:"measuredAt,omitempty"`
}

// AutoscalingStatus is the built-in autoscaler's state.
type AutoscalingStatus struct {
	// DesiredReplicas is the count the autoscaler set.
	DesiredReplicas int32 `json:"desiredReplicas"`
	// LastDecision says what drove the last change, e.g. "oldest ready step
	// waited 12s, target 5s: 2 → 4".
	// +optional
	LastDecision string `json:"lastDecision,omitempty"`
	// LastScaleTime is when the count last changed.
	// +optional
	LastScaleTime *metav1.Time `json:"lastScaleTime,omitempty"`
}

// WorkerPoolStatus is what the operator observed: replica counts from the
// Deployment and what each ready pod's /metrics reported.
type WorkerPoolStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replicas, ReadyReplicas and UpdatedReplicas come from the Deployment.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// ReadyReplicas is the number of ready pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// UpdatedReplicas is the number of pods on the current template.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`
	// Selector is the pods' label selector, for the scale subresource.
	// +optional
	Selector string `json:"selector,omitempty"`
	// Dispatch aggregates the pods' dispatch cores.
	// +optional
	Dispatch DispatchStatus `json:"dispatch,omitempty"`
	// FFI aggregates the pods' FFI channels.
	// +optional
	FFI FFIStatus `json:"ffi,omitempty"`
	// CallbackTimeouts is the pods' post-handler callback timeouts.
	// +optional
	CallbackTimeouts int64 `json:"callbackTimeouts,omitempty"`
	// SemaphoreAcquisitionFailures is the pods' dispatches without a permit.
	// +optional
	SemaphoreAcquisitionFailures int64 `json:"semaphoreAcquisitionFailures,omitempty"`
	// Queue is the pool's backlog, read from its queues.
	// +optional
	Queue *QueueStatus `json:"queue,omitempty"`
	// Autoscaling is the built-in autoscaler's state (with spec.autoscaling).
	// +optional
	Autoscaling *AutoscalingStatus `json:"autoscaling,omitempty"`
	// LastScrapeTime is when the pods' metrics were last read: unset until a
	// pod was read. A pool is read at most once per status interval unless
	// its set of ready pods changes; an unchanged status is rewritten only
	// every five minutes to refresh it.
	// +optional
	LastScrapeTime *metav1.Time `json:"lastScrapeTime,omitempty"`
	// Pods is a bounded, worst-first list of pods, for kubectl describe.
	// +kubebuilder:validation:MaxItems=20
	// +optional
	Pods []PodMetrics `json:"pods,omitempty"`
	// Conditions: Ready, Reconciling, Stalled, Available, Progressing,
	// Starving, Backpressure, MetricsAvailable, and with spec.autoscaling
	// ScalingActive and ScalingLimited (docs/operator.md has the table).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// WorkerPool runs a pool of Tasker step workers and reports their queue age
// and channel saturation.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=wp
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Replicas",type=string,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Backlog",type=integer,JSONPath=`.status.queue.backlog`
// +kubebuilder:printcolumn:name="Waited",type=string,JSONPath=`.status.queue.oldestReadyAge`
// +kubebuilder:printcolumn:name="Pending",type=integer,JSONPath=`.status.ffi.pendingEvents`
// +kubebuilder:printcolumn:name="Oldest",type=string,JSONPath=`.status.ffi.oldestPendingAge`
// +kubebuilder:printcolumn:name="Saturation",type=integer,JSONPath=`.status.dispatch.completionSaturationPercent`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="InFlight",type=integer,JSONPath=`.status.dispatch.inFlight`,priority=1
// +kubebuilder:printcolumn:name="Starving",type=string,JSONPath=`.status.conditions[?(@.type=="Starving")].status`,priority=1
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name must be at most 63 characters: it names the pool's Deployment and Service"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must start with a letter and contain only lowercase letters, digits and '-' (a DNS-1035 label): it names the pool's Service"
type WorkerPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired pool.
	Spec WorkerPoolSpec `json:"spec,omitempty"`
	// Status is what the operator observed.
	// +optional
	Status WorkerPoolStatus `json:"status,omitempty"`
}

// WorkerPoolList is a list of WorkerPools.
// +kubebuilder:object:root=true
type WorkerPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the pools.
	Items []WorkerPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&WorkerPool{}, &WorkerPoolList{})
}
