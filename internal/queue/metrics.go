package queue

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the queue's Prometheus collectors. They live on the Queue, not
// in package globals, so tests and several queues in one process never
// collide, and nothing lands on the global registry by accident.
type metrics struct {
	enqueued     prometheus.Counter
	claimed      prometheus.Counter
	acknowledged *prometheus.CounterVec
	redelivered  prometheus.Counter
	dead         prometheus.Counter
	fenced       prometheus.Counter
	released     prometheus.Counter
	claimsLost   prometheus.Counter
	reconnects   prometheus.Counter
	claimSeconds prometheus.Histogram
	// retentionDeleted counts finished steps deleted by retention, by state.
	retentionDeleted *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		enqueued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasker_queue_enqueued_total",
			Help: "Steps inserted by Enqueue (duplicates of an existing step_uuid excluded).",
		}),
		claimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasker_queue_claimed_total",
			Help: "Steps handed to this worker by Claim, redeliveries included.",
		}),
		acknowledged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_queue_acknowledged_total",
			Help: "Completions applied to the queue, by outcome (success, retryable_failure, permanent_failure).",
		}, []string{"outcome"}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasker_queue_redelivered_total",
			Help: "Claims of steps whose previous claim expired without acknowledgement (a worker died or stalled).",
		}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasker_queue_dead_total",
			Help: "Steps that became dead: permanent failure, retries exhausted, or final claim expired.",
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasker_queue_fenced_total",
			Help: "Completions refused because the claim token was stale (the step had been redelivered).",
		}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasker_queue_released_total",
			Help: "Claimed steps returned to the queue unstarted (drain on shutdown).",
		}),
		claimsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasker_queue_claims_lost_total",
			Help: "Heartbeats (Extend) that found the claim no longer held by this token.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasker_queue_listener_reconnects_total",
			Help: "Times the LISTEN connection was lost and re-established.",
		}),
		claimSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tasker_queue_claim_duration_seconds",
			Help:    "Latency of one Claim statement.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}),
		retentionDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_queue_retention_deleted_total",
			Help: "Finished steps deleted by retention (or Purge), by state (completed, dead).",
		}, []string{"state"}),
	}
	for _, st := range []State{StateCompleted, StateDead} {
		m.retentionDeleted.WithLabelValues(string(st))
	}
	for _, o := range []Outcome{Success, RetryableFailure, PermanentFailure} {
		m.acknowledged.WithLabelValues(string(o)) // export zeros so rate() works from the start
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.enqueued, m.claimed, m.acknowledged, m.redelivered, m.dead, m.fenced,
		m.released, m.claimsLost, m.reconnects, m.claimSeconds, m.retentionDeleted,
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	var errs []error
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("register queue metrics: %w", err)
	}
	return nil
}
