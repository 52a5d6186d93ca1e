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
)
