package ffi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

// Defaults (upstream's values).
const (
	DefaultServiceID                  = "ffi-dispatch"
	DefaultCompletionTimeout          = 30 * time.Second
	DefaultStarvationWarningThreshold = 10 * time.Second
	DefaultCompletionSendTimeout      = 10 * time.Second
	// slowSendWarning: a completion that waited longer than this for room in
	// the completion channel is logged, as upstream did.
	slowSendWarning = 100 * time.Millisecond
)

// Config tunes a Channel; zero values take the defaults.
type Config struct {
	// ServiceID names the channel in logs and failure metadata.
	ServiceID string
	// WorkerID is stamped into every result's metadata.
	WorkerID string
	// CompletionTimeout: a pending event older than this becomes an
	// ffi_timeout failure.
	CompletionTimeout time.Duration
	// StarvationWarningThreshold: a pending event older than this is
	// starving (strictly older, as upstream).
	StarvationWarningThreshold time.Duration
	// CompletionSendTimeout bounds how long Complete waits for room in the
	// completion channel before answering "retry later".
	CompletionSendTimeout time.Duration
	// Callback runs after each delivered completion under CallbackStrategy,
	// bounded by CallbackTimeout.
	Callback dispatch.PostHandlerCallback
	// CallbackStrategy is how long Complete waits for the callback.
	CallbackStrategy dispatch.CallbackStrategy
	// CallbackTimeout bounds the callback (except under Blocking).
	CallbackTimeout time.Duration
	// SweepInterval is how often the channel itself sweeps timeouts and
	// checks starvation (default: a tenth of the smaller of the two
	// thresholds, between 10 ms and 1 s).
	SweepInterval time.Duration
	// SettledMemory is how many recently settled event ids are remembered so
	// a late or repeated Complete gets a precise answer (default 65536).
	SettledMemory int
}

func (c *Config) defaults() {
	if c.ServiceID == "" {
		c.ServiceID = DefaultServiceID
	}
	if c.CompletionTimeout <= 0 {
		c.CompletionTimeout = DefaultCompletionTimeout
	}
	if c.StarvationWarningThreshold <= 0 {
		c.StarvationWarningThreshold = DefaultStarvationWarningThreshold
	}
	if c.CompletionSendTimeout <= 0 {
		c.CompletionSendTimeout = DefaultCompletionSendTimeout
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = min(max(min(c.CompletionTimeout, c.StarvationWarningThreshold)/10, 10*time.Millisecond), time.Second)
	}
	if c.SettledMemory <= 0 {
		c.SettledMemory = 1 << 16
	}
}

// CompleteStatus is Complete's answer. Each refusal is distinct so a foreign
// caller knows whether to retry, give up, or report a bug.
type CompleteStatus int

// Complete's answers.
const (
	// Completed: the result was delivered; the event is settled.
	Completed CompleteStatus = iota
	// RetryLater: the completion channel stayed full for the send timeout;
	// the event is still pending and may be completed again.
	RetryLater
	// UnknownEvent: no such event was ever polled (or it was forgotten long ago).
	UnknownEvent
	// AlreadyCompleted: the event was completed before.
	AlreadyCompleted
	// TimedOut: the event had already become an ffi_timeout failure.
	TimedOut
	// Busy: another Complete for the same event is in progress.
	Busy
	// Stopped: the channel no longer accepts completions.
	Stopped
	// InvalidResult: the result is malformed or names another step; the
	// event stays pending and may be completed with a correct result.
	InvalidResult
)

// String names the status in logs and in the C ABI's messages.
func (s CompleteStatus) String() string {
	switch s {
	case Completed:
		return "completed"
	case RetryLater:
		return "retry later: completion channel full"
	case UnknownEvent:
		return "unknown event id"
	case AlreadyCompleted:
		return "event already completed"
	case TimedOut:
		return "event already timed out (an ffi_timeout failure was delivered)"
	case Busy:
		return "another completion of this event is in progress"
	case Stopped:
		return "channel stopped"
	case InvalidResult:
		return "invalid result"
	}
	return fmt.Sprintf("status %d", int(s))
}

// ErrResultMismatch means a result's step_uuid is not the polled event's.
var ErrResultMismatch = errors.New("result step_uuid does not match the event")

// pendingEvent is a polled, not yet settled event.
type pendingEvent struct {
	msg          dispatch.StepMessage
	dispatchedAt time.Time
	// completing is set while a Complete or the sweeper is delivering this
	// event's result, so no one else settles it meanwhile. It is cleared
	// again if delivery fails, leaving the event pending.
	completing bool
	warned     bool // a starvation warning was logged for this event
}

// settledKind records how an event was settled.
type settledKind uint8

const (
	settledCompleted settledKind = iota + 1
	settledTimedOut
)

// Channel is the FFI dispatch channel. It is safe for use from many foreign
// threads at once.
type Channel struct {
	cfg        Config
	dispatch   <-chan dispatch.StepMessage
	completion chan<- *dispatch.Completion
	callbacks  *dispatch.CallbackRunner
	log        logr.Logger

	mu      sync.Mutex
	pending map[string]*pendingEvent
	settled map[string]settledKind
	// ring holds the settled ids in arrival order; when it wraps, the
	// oldest id is forgotten. O(1) per settle, so a long-running worker
	// does not slow down once the memory is full.
	ring    []string
	next    int
	stopped bool
	// deliveries counts results being sent (events marked completing). It
	// is only incremented under mu while not stopped, so after Stop it can
	// be waited on: see WaitDeliveries.
	deliveries sync.WaitGroup

	timeouts    prometheus.Counter
	completions *prometheus.CounterVec
	polled      atomic.Uint64
	lastWarn    atomic.Int64
}

// New creates a channel that consumes dispatch and delivers to completion.
// metrics supplies the shared callback counters.
func New(cfg Config, dispatchCh <-chan dispatch.StepMessage, completion chan<- *dispatch.Completion, metrics *dispatch.Metrics, log logr.Logger) *Channel {
	cfg.defaults()
	log = log.WithValues("serviceId", cfg.ServiceID)
	return &Channel{
		cfg: cfg, dispatch: dispatchCh, completion: completion, log: log,
		callbacks: dispatch.NewCallbackRunner(cfg.Callback, cfg.CallbackStrategy, cfg.CallbackTimeout, cfg.ServiceID, metrics, log),
		pending:   map[string]*pendingEvent{},
		settled:   make(map[string]settledKind, cfg.SettledMemory),
		ring:      make([]string, cfg.SettledMemory),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{Name: "tasker_ffi_timeouts_total",
			Help: "Pending FFI events that exceeded the completion timeout and became ffi_timeout failures."}),
		completions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tasker_ffi_complete_calls_total",
			Help: "Complete calls from foreign handlers, by answer."}, []string{"status"}),
	}
}

// Config returns the effective configuration (defaults applied).
func (c *Channel) Config() Config { return c.cfg }

// Poll takes the next step event, if any, without blocking. The event is
// pending from now until it is completed or times out.
//
// The (non-blocking) receive and the insertion into the pending set happen
// under one lock, so an event is never in flight between the two: the
// drain, which waits for PendingCount to reach zero and then Stops, cannot
// miss an event a poller has just taken, and Stop cannot leave one behind.
func (c *Channel) Poll() (dispatch.StepMessage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return dispatch.StepMessage{}, false
	}
	var msg dispatch.StepMessage
	select {
	case m, ok := <-c.dispatch:
		if !ok {
			return dispatch.StepMessage{}, false
		}
		msg = m
	default:
		return dispatch.StepMessage{}, false
	}
	c.polled.Add(1)
	c.pending[msg.EventID] = &pendingEvent{msg: msg, dispatchedAt: time.Now()}
	return msg, true
}

// Complete delivers a foreign handler's result for a polled event. The
// result is normalised (metadata.retryable mirrors error.retryable) and must
// name the event's step. No lock is held while waiting for room in the
// completion channel; if none frees up within the send timeout the answer is
// RetryLater and the event stays pending. On Completed the post-handler
// callback runs per the callback strategy before Complete returns.
func (c *Channel) Complete(eventID string, result dispatch.StepExecutionResult) (CompleteStatus, error) {
	if err := result.Normalize(); err != nil {
		return c.answer(InvalidResult, fmt.Errorf("invalid result: %w", err))
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return c.answer(Stopped, nil)
	}
	ev, ok := c.pending[eventID]
	if !ok {
		kind := c.settled[eventID]
		c.mu.Unlock()
		switch kind {
		case settledCompleted:
			return c.refuse(AlreadyCompleted, eventID)
		case settledTimedOut:
			return c.refuse(TimedOut, eventID)
		}
		return c.refuse(UnknownEvent, eventID)
	}
	if ev.msg.StepUUID != result.StepUUID {
		c.mu.Unlock()
		return c.answer(InvalidResult, fmt.Errorf("%w: event %s is step %s, result names %s", ErrResultMismatch, eventID, ev.msg.StepUUID, result.StepUUID))
	}
	if ev.completing {
		c.mu.Unlock()
		return c.refuse(Busy, eventID)
	}
	ev.completing = true
	c.deliveries.Add(1)
	c.mu.Unlock()

	result.Metadata.WorkerID = c.cfg.WorkerID
	comp := &dispatch.Completion{Message: ev.msg, Result: result}
	start := time.Now()
	sent := dispatch.SendCompletion(c.completion, comp, c.cfg.CompletionSendTimeout)
	waited := time.Since(start)
	if !c.settle(eventID, ev, sent, settledCompleted) {
		c.log.Info("completion channel full: Complete must be retried; the event stays pending",
			"eventId", eventID, "stepUuid", ev.msg.StepUUID, "waited", waited)
		return c.answer(RetryLater, nil)
	}
	if waited > slowSendWarning {
		c.log.Info("FFI completion waited for room in the completion channel", "eventId", eventID, "waited", waited)
	}
	c.callbacks.Run(&comp.Message, &comp.Result)
	return c.answer(Completed, nil)
}

// settle finishes a delivery attempt started by marking ev completing: on
// success the event leaves the pending map and is remembered as kind; on
// failure it becomes available again. It reports sent.
func (c *Channel) settle(eventID string, ev *pendingEvent, sent bool, kind settledKind) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.deliveries.Done()
	if !sent {
		ev.completing = false
		return false
	}
	delete(c.pending, eventID)
	if old := c.ring[c.next]; old != "" {
		delete(c.settled, old)
	}
	c.ring[c.next] = eventID
	c.next = (c.next + 1) % len(c.ring)
	c.settled[eventID] = kind
	return true
}

func (c *Channel) refuse(s CompleteStatus, eventID string) (CompleteStatus, error) {
	c.log.Info("FFI completion refused", "eventId", eventID, "reason", s.String())
	return c.answer(s, nil)
}

func (c *Channel) answer(s CompleteStatus, err error) (CompleteStatus, error) {
	c.completions.WithLabelValues(statusLabels[s]).Inc()
	return s, err
}

// statusLabels label tasker_ffi_complete_calls_total.
var statusLabels = map[CompleteStatus]string{
	Completed: "completed", RetryLater: "retry_later", UnknownEvent: "unknown_event", AlreadyCompleted: "already_completed",
	TimedOut: "timed_out", Busy: "busy", Stopped: "stopped", InvalidResult: "invalid_result",
}

// Metrics is the channel's view of its pending events (upstream's
// FfiDispatchMetrics plus the starvation fields).
type Metrics struct {
	// PendingCount is how many polled events await completion.
	PendingCount int `json:"pending_count"`
	// OldestPendingAgeMs is the oldest pending event's age (nil when none).
	OldestPendingAgeMs *int64 `json:"oldest_pending_age_ms"`
	// NewestPendingAgeMs is the newest pending event's age (nil when none).
	NewestPendingAgeMs *int64 `json:"newest_pending_age_ms"`
	// OldestEventID names the oldest pending event, for debugging.
	OldestEventID string `json:"oldest_event_id,omitempty"`
	// StarvationDetected is true while any event is starving.
	StarvationDetected bool `json:"starvation_detected"`
	// StarvingEventCount counts events older than the starvation threshold.
	StarvingEventCount int `json:"starving_event_count"`
}

// Metrics reports pending events now. Ages are nil when nothing is pending;
// an event is starving when strictly older than the starvation threshold.
func (c *Channel) Metrics() Metrics {
	return c.metricsAt(time.Now())
}

func (c *Channel) metricsAt(now time.Time) Metrics {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := Metrics{PendingCount: len(c.pending)}
	var oldest, newest time.Duration = -1, -1
	for id, ev := range c.pending {
		age := now.Sub(ev.dispatchedAt)
		if oldest < 0 || age > oldest {
			oldest, m.OldestEventID = age, id
		}
		if newest < 0 || age < newest {
			newest = age
		}
		if age > c.cfg.StarvationWarningThreshold {
			m.StarvingEventCount++
		}
	}
	if oldest >= 0 {
		o, n := oldest.Milliseconds(), newest.Milliseconds()
		m.OldestPendingAgeMs, m.NewestPendingAgeMs = &o, &n
	}
	m.StarvationDetected = m.StarvingEventCount > 0
	return m
}

// StarvingEvent describes one pending event older than the threshold.
type StarvingEvent struct {
	// EventID is the pending event.
	EventID string `json:"event_id"`
	// StepUUID is its step.
	StepUUID string `json:"step_uuid"`
	// AgeMs is how long it has been pending.
	AgeMs int64 `json:"age_ms"`
}

// CheckStarvationWarnings logs one warning per pending event older than the
// starvation threshold and returns them (upstream's explicit check, kept for
// parity; the channel also runs it itself, rate-limited, on its ticker).
func (c *Channel) CheckStarvationWarnings() []StarvingEvent {
	out := c.starving(time.Now(), false)
	for _, s := range out {
		c.log.Info("FFI dispatch: pending event aging - slow polling detected", "eventId", s.EventID,
			"stepUuid", s.StepUUID, "ageMs", s.AgeMs, "thresholdMs", c.cfg.StarvationWarningThreshold.Milliseconds())
	}
	return out
}

// starving lists events older than the threshold; with onlyNew it lists only
// those not warned about yet and marks them.
func (c *Channel) starving(now time.Time, onlyNew bool) []StarvingEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []StarvingEvent
	for id, ev := range c.pending {
		age := now.Sub(ev.dispatchedAt)
		if age <= c.cfg.StarvationWarningThreshold || (onlyNew && ev.warned) {
			continue
		}
		ev.warned = true
		out = append(out, StarvingEvent{EventID: id, StepUUID: ev.msg.StepUUID, AgeMs: age.Milliseconds()})
	}
	return out
}

// CleanupTimeouts turns every pending event older than the completion timeout
// into an ffi_timeout failure (retryable, execution time = the timeout) and
// delivers it; it returns how many were delivered. An event whose failure
// cannot be delivered now stays pending and is tried again on the next
// sweep: a timeout result is never dropped.
func (c *Channel) CleanupTimeouts() int {
	now := time.Now()
	c.mu.Lock()
	var expired []string
	for id, ev := range c.pending {
		if !c.stopped && !ev.completing && now.Sub(ev.dispatchedAt) > c.cfg.CompletionTimeout {
			ev.completing = true
			c.deliveries.Add(1)
			expired = append(expired, id)
		}
	}
	evs := make([]*pendingEvent, len(expired))
	for i, id := range expired {
		evs[i] = c.pending[id]
	}
	c.mu.Unlock()
	n := 0
	for i, id := range expired {
		ev := evs[i]
		res := dispatch.FailureResult(ev.msg.StepUUID, fmt.Sprintf("FFI handler timed out after %dms", c.cfg.CompletionTimeout.Milliseconds()),
			dispatch.ErrorTypeFFITimeout, true, c.cfg.CompletionTimeout, map[string]any{"service_id": c.cfg.ServiceID, "event_id": id})
		res.Metadata.WorkerID = c.cfg.WorkerID
		comp := &dispatch.Completion{Message: ev.msg, Result: res}
		if !c.settle(id, ev, dispatch.SendCompletion(c.completion, comp, c.cfg.CompletionSendTimeout), settledTimedOut) {
			c.log.Info("ffi_timeout failure not delivered yet (completion channel full); will retry", "eventId", id)
			continue
		}
		n++
		c.timeouts.Inc()
		c.log.Info("FFI event timed out; delivered ffi_timeout failure", "eventId", id, "stepUuid", ev.msg.StepUUID,
			"timeoutMs", c.cfg.CompletionTimeout.Milliseconds())
		c.callbacks.Run(&comp.Message, &comp.Result)
	}
	return n
}

// Run sweeps timeouts and checks starvation every sweep interval until ctx
// ends. Starvation is logged once per event, plus a summary at most every
// 10 s while any event starves.
func (c *Channel) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.CleanupTimeouts()
		now := time.Now()
		for _, s := range c.starving(now, true) {
			c.log.Info("FFI dispatch: pending event aging - slow polling detected", "eventId", s.EventID,
				"stepUuid", s.StepUUID, "ageMs", s.AgeMs, "thresholdMs", c.cfg.StarvationWarningThreshold.Milliseconds())
		}
		if m := c.metricsAt(now); m.StarvationDetected {
			last := c.lastWarn.Load()
			if now.UnixNano()-last >= int64(10*time.Second) && c.lastWarn.CompareAndSwap(last, now.UnixNano()) {
				c.log.Info("FFI pollers are falling behind", "pending", m.PendingCount, "starving", m.StarvingEventCount,
					"oldestAgeMs", *m.OldestPendingAgeMs)
			}
		}
	}
}

// Stop refuses further polls and completions and returns every event still
// pending, so the caller can return them to the queue. Call it only after
// the drain deadline: a foreign handler still working on one of them will be
// refused when it completes.
func (c *Channel) Stop() []dispatch.StepMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	out := make([]dispatch.StepMessage, 0, len(c.pending))
	for id, ev := range c.pending {
		if ev.completing {
			continue // its delivery is in progress; it settles itself
		}
		out = append(out, ev.msg)
		delete(c.pending, id)
	}
	return out
}

// WaitDeliveries waits, after Stop, until no result is being sent any more,
// so the completion channel can be closed safely.
func (c *Channel) WaitDeliveries() { c.deliveries.Wait() }

// PendingCount is the number of polled, unsettled events.
func (c *Channel) PendingCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// RegisterMetrics exports tasker_ffi_pending_events,
// tasker_ffi_oldest_event_age_ms and tasker_ffi_starving_events (read at
// scrape time) and the FFI counters.
func (c *Channel) RegisterMetrics(reg prometheus.Registerer) error {
	gauge := func(name, help string, f func(Metrics) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(c.Metrics()) })
	}
	for _, col := range []prometheus.Collector{
		gauge("tasker_ffi_pending_events", "Events polled by a foreign handler and not yet completed.",
			func(m Metrics) float64 { return float64(m.PendingCount) }),
		gauge("tasker_ffi_oldest_event_age_ms", "Age of the oldest pending FFI event in milliseconds (0 when none).",
			func(m Metrics) float64 {
				if m.OldestPendingAgeMs == nil {
					return 0
				}
				return float64(*m.OldestPendingAgeMs)
			}),
		gauge("tasker_ffi_starving_events", "Pending FFI events older than the starvation warning threshold.",
			func(m Metrics) float64 { return float64(m.StarvingEventCount) }),
		c.timeouts, c.completions,
	} {
		if err := reg.Register(col); err != nil {
			return fmt.Errorf("register FFI metrics: %w", err)
		}
	}
	return nil
}
