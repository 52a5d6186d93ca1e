package v1alpha1

// Condition types on a WorkerPool. Each condition carries the generation it
// was computed for (observedGeneration), so a stale condition is visible.
const (
	// ConditionReady summarises the pool: True when nothing blocks it, the
	// current template is rolled out, enough replicas are available for the
	// disruption budget and its metrics are readable. A change of replica
	// count alone does not make it False.
	ConditionReady = "Ready"
	// ConditionAvailable is True when enough replicas are available for the
	// pool's disruption budget (all but one of two or more, else all).
	ConditionAvailable = "Available"
	// ConditionProgressing is True while a template rollout is under way
	// (never for a change of replica count alone).
	ConditionProgressing = "Progressing"
	// ConditionReconciling is kstatus's "the spec is not realised yet": True
	// while a rollout, a scale or a child write is pending.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is kstatus's "progress is blocked": True with a reason
	// and a message that names the pod or object and the cause. kstatus reads
	// a True Stalled as Failed.
	ConditionStalled = "Stalled"
	// ConditionStarving is True when an FFI event has waited longer than the
	// pool's starvation warning threshold: polled and not completed, or
	// waiting to be polled (the foreign pollers stopped polling).
	ConditionStarving = "Starving"
	// ConditionBackpressure is True when completion-channel saturation is at
	// or above the warning percent; its reason says Warning or Critical.
	ConditionBackpressure = "Backpressure"
	// ConditionMetricsAvailable is False, naming the pods, when scrapes fail.
	ConditionMetricsAvailable = "MetricsAvailable"
	// ConditionScalingActive (with spec.autoscaling) is True while the
	// autoscaler can measure what it scales on; False (BacklogUnavailable,
	// Suspended) when it keeps the count as it is.
	ConditionScalingActive = "ScalingActive"
	// ConditionScalingLimited (with spec.autoscaling) is True when the count
	// the targets ask for is held back: at minReplicas or maxReplicas, by a
	// step limit, or held by backpressure from scaling in.
	ConditionScalingLimited = "ScalingLimited"
)

// Condition reasons.
const (
	// ReasonSaturationWarning: saturation at or above the warning percent.
	ReasonSaturationWarning = "Warning"
	// ReasonSaturationCritical: saturation at or above the critical percent.
	ReasonSaturationCritical = "Critical"
	// ReasonSaturationNormal: saturation below the warning percent.
	ReasonSaturationNormal = "Normal"
	// ReasonEventsStarving: FFI events wait longer than the threshold.
	ReasonEventsStarving = "EventsStarving"
	// ReasonPollingKeepsUp: no FFI event waits longer than the threshold.
	ReasonPollingKeepsUp = "PollingKeepsUp"
	// ReasonScrapeFailed: fewer than half of the ready pods have a usable
	// (fresh or recent) sample.
	ReasonScrapeFailed = "ScrapeFailed"
	// ReasonScraped: every ready pod's metrics were read in the last pass.
	ReasonScraped = "Scraped"
	// ReasonPartialScrape: some ready pods could not be read in the last
	// pass; the pool's figures use their recent samples or leave them out,
	// and the message names them.
	ReasonPartialScrape = "PartialScrape"
	// ReasonMinimumReplicasAvailable and ReasonMinimumReplicasUnavailable
	// explain Available.
	ReasonMinimumReplicasAvailable   = "MinimumReplicasAvailable"
	ReasonMinimumReplicasUnavailable = "MinimumReplicasUnavailable"
	// ReasonRollingOut and ReasonRolledOut explain Progressing.
	ReasonRollingOut = "RollingOut"
	ReasonRolledOut  = "RolledOut"
	// ReasonScaling: the pool's replica count changed and the pods have not
	// caught up yet (Reconciling).
	ReasonScaling = "Scaling"
	// ReasonReconciled: the spec is realised (Reconciling False).
	ReasonReconciled = "Reconciled"
	// ReasonApplyFailed: a child could not be written for a reason that may
	// pass (the API server unreachable, a timeout); the operator retries.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonSuspended: spec.suspend scaled the pool to zero pods (Ready True,
	// Reconciling False once they are gone).
	ReasonSuspended = "Suspended"
	// Reasons of ScalingActive and ScalingLimited.

	// ReasonScalingActive: the autoscaler measured the queue and decided.
	ReasonScalingActive = "ValidMetrics"
	// ReasonBacklogUnavailable: the pool's queue could not be read (its
	// Secret, the database); the replica count is kept as it is.
	ReasonBacklogUnavailable = "BacklogUnavailable"
	// ReasonTooFewReplicas, ReasonTooManyReplicas: held at minReplicas or
	// maxReplicas.
	ReasonTooFewReplicas  = "TooFewReplicas"
	ReasonTooManyReplicas = "TooManyReplicas"
	// ReasonScaleStepLimited: a behavior policy or window holds the change back.
	ReasonScaleStepLimited = "ScaleStepLimited"
	// ReasonHeldByBackpressure: not scaled in while a pod is at critical
	// saturation or the handlers' utilisation is above its target.
	ReasonHeldByBackpressure = "HeldByBackpressure"
	// ReasonDesiredWithinRange: nothing holds the count back.
	ReasonDesiredWithinRange = "DesiredWithinRange"

	// ReasonNotStalled: nothing blocks the pool (Stalled False).
	ReasonNotStalled = "NotStalled"
	// ReasonStalled: Reconciling is False because progress is blocked; the
	// Stalled condition says why.
	ReasonStalled = "Stalled"

	// Reasons of Stalled (and then of Ready): what blocks the pool.

	// ReasonImagePullFailed: a pod's image cannot be pulled (ErrImagePull,
	// ImagePullBackOff, ErrImageNeverPull, InvalidImageName).
	ReasonImagePullFailed = "ImagePullFailed"
	// ReasonConfigError: a container cannot be created from its
	// configuration, e.g. a missing Secret or key (CreateContainerConfigError).
	ReasonConfigError = "ConfigError"
	// ReasonCrashLoop: a container keeps exiting (CrashLoopBackOff); the
	// message has its last exit code and reason, e.g. OOMKilled.
	ReasonCrashLoop = "CrashLoop"
	// ReasonUnschedulable: the scheduler cannot place a pod; the message is
	// the scheduler's.
	ReasonUnschedulable = "Unschedulable"
	// ReasonChildConflict: an object the operator does not own already holds
	// the name of one of the pool's children.
	ReasonChildConflict = "ChildConflict"
	// ReasonForbidden: a write was refused by RBAC, an admission webhook or
	// a quota, the operator's own or the ReplicaSet's creating pods.
	ReasonForbidden = "Forbidden"
	// ReasonProgressDeadlineExceeded: the Deployment made no progress within
	// its progress deadline.
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
	// ReasonNoReadyPods: there is no ready pod to read metrics from, so the
	// metric-based conditions are Unknown rather than a guess.
	ReasonNoReadyPods = "NoReadyPods"
	// ReasonFFIDisabled: the pool runs no foreign handlers, so nothing can starve.
	ReasonFFIDisabled = "FFIDisabled"
	// ReasonInvalidSpec: the spec passed the schema but the worker would
	// refuse the configuration rendered from it, or the API server refused a
	// child rendered from it; the message says why.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonPoolReady: nothing blocks it, rolled out, available and measured.
	ReasonPoolReady = "PoolReady"
)

// Labels and annotations the operator puts on the objects it manages. They
// are exported so that tools and tests select a pool's pods the same way the
// operator does.
const (
	// PoolLabel selects a pool's pods; its value is the pool's name.
	PoolLabel = "workers.tasker.dev/pool"
	// ConfigHashAnnotation on the pod template carries a hash of worker.toml,
	// so that a configuration change rolls the pods. The same hash ends the
	// name of the pool's worker.toml ConfigMap.
	ConfigHashAnnotation = "workers.tasker.dev/config-hash"
	// TemplateHashAnnotation on the pod template (and so on every pod) is a
	// hash of the rest of the template the operator renders: a pod carrying
	// another value runs an older template, which tells a rollout from a
	// change of replica count.
	TemplateHashAnnotation = "workers.tasker.dev/template-hash"
	// AppliedHashAnnotation on each child is a hash of what the operator last
	// applied to it, so an unchanged pool costs no write.
	AppliedHashAnnotation = "workers.tasker.dev/applied-hash"
	// MetricsPortName is the container port the operator scrapes.
	MetricsPortName = "metrics"
)
