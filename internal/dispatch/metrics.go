package dispatch

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the dispatch core's counters. The names are a contract with the
// operator (which builds WorkerPool status from them) and with the alert
// rules, so they are fixed. They are registered on a Registerer passed in,
// never the global registry, so several workers can live in one process.
type Metrics struct {
	// CallbackTimeouts counts post-handler callbacks that hit their timeout.
	CallbackTimeouts prometheus.Counter
	// CallbackPanics counts callbacks that panicked (recovered).
	CallbackPanics prometheus.Counter
	// SemaphoreFailures counts dispatches that could not get a permit.
	SemaphoreFailures prometheus.Counter
	// UndeliveredResults counts results that could not be sent to the
	// completion channel within the send timeout; their steps stay claimed and
	// the queue redelivers them.
	UndeliveredResults prometheus.Counter
	// LateResults counts handler results discarded because the step had
	// already timed out.
	LateResults prometheus.Counter
	// SinkRetries counts failed attempts to persist a batch of results.
	SinkRetries prometheus.Counter
	// stepsCompleted is tasker_steps_completed_total{outcome}, pre-curried.
	stepsCompleted [3]prometheus.Counter
	// StepsCompletedVec is the labelled family behind StepsCompleted.
	StepsCompletedVec *prometheus.CounterVec
}

// NewMetrics creates and registers the dispatch counters on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &Metrics{
		CallbackTimeouts:   c("tasker_callback_timeouts_total", "Post-handler callbacks that hit their timeout."),
		CallbackPanics:     c("tasker_callback_panics_total", "Post-handler callbacks that panicked (recovered; the step is unaffected)."),
		SemaphoreFailures:  c("tasker_semaphore_acquisition_failures_total", "Dispatches that could not get a concurrency permit."),
		UndeliveredResults: c("tasker_completion_send_failures_total", "Results not delivered to the completion channel within the send timeout (the step is redelivered by the queue)."),
		LateResults:        c("tasker_dispatch_late_results_total", "Handler results discarded because the step had already timed out."),
		SinkRetries:        c("tasker_completion_persist_retries_total", "Failed attempts to persist a batch of results (retried with backoff)."),
		StepsCompletedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_steps_completed_total", Help: "Step results persisted, by outcome.",
		}, []string{"outcome"}),
	}
	for i, o := range []Outcome{OutcomeSuccess, OutcomeRetryableFailure, OutcomePermanentFailure} {
		m.stepsCompleted[i] = m.StepsCompletedVec.WithLabelValues(string(o))
	}
	for _, col := range []prometheus.Collector{m.CallbackTimeouts, m.CallbackPanics, m.SemaphoreFailures,
		m.UndeliveredResults, m.LateResults, m.SinkRetries, m.StepsCompletedVec} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register dispatch metrics: %w", err)
		}
	}
	return m, nil
}

// StepsCompleted is the counter for one outcome.
func (m *Metrics) StepsCompleted(o Outcome) prometheus.Counter {
	switch o {
	case OutcomeSuccess:
		return m.stepsCompleted[0]
	case OutcomeRetryableFailure:
		return m.stepsCompleted[1]
	default:
		return m.stepsCompleted[2]
	}
}
