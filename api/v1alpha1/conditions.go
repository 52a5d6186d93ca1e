package v1alpha1

// Condition types on a WorkerPool. Each condition carries the generation it
// was computed for (observedGeneration), so a stale condition is visible.
const (
	// ConditionReady summarises the pool (kstatus-compatible): True when the
	// pool is available, rolled out and its metrics are readable.
	ConditionReady = "Ready"
	// ConditionAvailable is True when enough replicas are ready.
	ConditionAvailable = "Available"
	// ConditionProgressing is True while a rollout is under way.
	ConditionProgressing = "Progressing"
	// ConditionStarving is True when the oldest pending FFI event is older
	// than the pool's starvation warning threshold.
	ConditionStarving = "Starving"
	// ConditionBackpressure is True when completion-channel saturation is at
	// or above the warning percent; its reason says Warning or Critical.
	ConditionBackpressure = "Backpressure"
	// ConditionMetricsAvailable is False, naming the pods, when scrapes fail.
	ConditionMetricsAvailable = "MetricsAvailable"
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
	// ReasonScrapeFailed: one or more pods' metrics could not be read.
	ReasonScrapeFailed = "ScrapeFailed"
	// ReasonScraped: every ready pod's metrics were read.
	ReasonScraped = "Scraped"
	// ReasonMinimumReplicasAvailable and ReasonMinimumReplicasUnavailable
	// explain Available.
	ReasonMinimumReplicasAvailable   = "MinimumReplicasAvailable"
	ReasonMinimumReplicasUnavailable = "MinimumReplicasUnavailable"
	// ReasonRollingOut and ReasonRolledOut explain Progressing.
	ReasonRollingOut = "RollingOut"
	ReasonRolledOut  = "RolledOut"
	// ReasonProgressDeadlineExceeded: the Deployment stopped making progress
	// (image pull errors, crash loops, unschedulable pods).
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
	// ReasonNoReadyPods: there is no ready pod to read metrics from, so the
	// metric-based conditions are Unknown rather than a guess.
	ReasonNoReadyPods = "NoReadyPods"
	// ReasonFFIDisabled: the pool runs no foreign handlers, so nothing can starve.
	ReasonFFIDisabled = "FFIDisabled"
	// ReasonInvalidSpec: the spec passed the schema but the worker would
	// refuse the configuration rendered from it; the message says why.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonPoolReady: available, rolled out and measured.
	ReasonPoolReady = "PoolReady"
)

// Labels and annotations the operator puts on the objects it manages. They
// are exported so that tools and tests select a pool's pods the same way the
// operator does.
const (
	// PoolLabel selects a pool's pods; its value is the pool's name.
	PoolLabel = "workers.tasker.dev/pool"
	// ConfigHashAnnotation on the pod template carries a hash of worker.toml,
	// so that a configuration change rolls the pods.
	ConfigHashAnnotation = "workers.tasker.dev/config-hash"
	// MetricsPortName is the container port the operator scrapes.
	MetricsPortName = "metrics"
)
