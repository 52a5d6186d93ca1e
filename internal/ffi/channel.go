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
	// Permits, when set, is the semaphore whose permit every event carries
	// (StepMessage.Permit) from the moment it is handed to the channel:
	// waiting to be polled and polled both count as in flight, so
	// max_concurrent_handlers, load shedding and the in-flight gauge hold
	// for foreign handlers as for native ones. The channel releases an
	// event's permit when it settles the event or hands it back.
	Permits *dispatch.Semaphore
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
	metrics    *dispatch.Metrics
	log        logr.Logger

	mu sync.Mutex
	// head is the oldest event waiting to be polled, taken off the dispatch
	// channel (which cannot be peeked) so that its age can be read; Poll
	// takes it before anything else.
	head *dispatch.StepMessage
	// lastPoll is when a poller last called Poll (found an event or not):
	// a poller that stopped calling is a dead poller.
	lastPoll time.Time
	pending  map[string]*pendingEvent
	settled  map[string]settledKind
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
	stallWarn   atomic.Int64
}

// New creates a channel that consumes dispatch and delivers to completion.
// metrics counts completions that could not be delivered within the send
// timeout (answered RetryLater). Post-handler callbacks are not the
// channel's business: the completion processor runs them once a result is
// durable, so Complete never waits for one.
func New(cfg Config, dispatchCh <-chan dispatch.StepMessage, completion chan<- *dispatch.Completion, metrics *dispatch.Metrics, log logr.Logger) *Channel {
	cfg.defaults()
	log = log.WithValues("serviceId", cfg.ServiceID)
	return &Channel{
		cfg: cfg, dispatch: dispatchCh, completion: completion, metrics: metrics, log: log,
		lastPoll: time.Now(),
		pending:  map[string]*pendingEvent{},
		settled:  make(map[string]settledKind, cfg.SettledMemory),
		ring:     make([]string, cfg.SettledMemory),
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
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return dispatch.StepMessage{}, false
	}
	c.lastPoll = now
	var msg dispatch.StepMessage
	if c.head != nil {
		msg, c.head = *c.head, nil
	} else {
		select {
		case m, ok := <-c.dispatch:
			if !ok {
				return dispatch.StepMessage{}, false
			}
			msg = m
		default:
			return dispatch.StepMessage{}, false
		}
	}
	c.polled.Add(1)
	c.pending[msg.EventID] = &pendingEvent{msg: msg, dispatchedAt: now}
	return msg, true
}

// fillHead moves the oldest unpolled event off the dispatch channel into
// head, if head is empty, so its age can be read; c.mu is held. An event
// that carries no QueuedAt is stamped now.
func (c *Channel) fillHead(now time.Time) {
	if c.head != nil || c.stopped {
		return
	}
	select {
	case m, ok := <-c.dispatch:
		if !ok {
			return
		}
		if m.QueuedAt.IsZero() {
			m.QueuedAt = now
		}
		c.head = &m
	default:
	}
}

// unpolledLocked counts the events waiting to be polled and the age of the
// oldest (-1 when none); c.mu is held.
func (c *Channel) unpolledLocked(now time.Time) (n int, oldest time.Duration) {
	c.fillHead(now)
	if c.head == nil {
		return 0, -1
	}
	return 1 + len(c.dispatch), now.Sub(c.head.QueuedAt)
}

// Stall describes events waiting for a poller that has not polled for longer
// than the starvation warning threshold: the foreign pollers died or hang.
type Stall struct {
	// SinceLastPoll is how long ago a poller last called Poll.
	SinceLastPoll time.Duration
	// Waiting is how many events wait to be polled.
	Waiting int
}

// Stalled reports a stall, if events wait and no poll happened for longer
// than the starvation warning threshold. The worker's /readyz fails then, so
// that Kubernetes notices a pod whose pollers died.
func (c *Channel) Stalled() (Stall, bool) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	n, _ := c.unpolledLocked(now)
	since := now.Sub(c.lastPoll)
	return Stall{SinceLastPoll: since, Waiting: n}, n > 0 && since > c.cfg.StarvationWarningThreshold
}

// releasePermit gives back the permit an event held, if the channel tracks
// permits.
func (c *Channel) releasePermit(m *dispatch.StepMessage) {
	if c.cfg.Permits != nil {
		c.cfg.Permits.Release(m.Permit)
	}
}

// Complete delivers a foreign handler's result for a polled event. The
// result is normalised (metadata.retryable mirrors error.retryable) and must
// name the event's step. No lock is held while waiting for room in the
// completion channel; if none frees up within the send timeout the answer is
// RetryLater and the event stays pending. Complete never waits for a
// post-handler callback: those run once the result is durable.
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
		c.metrics.UndeliveredResults.Inc()
		c.log.Info("completion channel full: Complete must be retried; the event stays pending",
			"eventId", eventID, "stepUuid", ev.msg.StepUUID, "waited", waited)
		return c.answer(RetryLater, nil)
	}
	if waited > slowSendWarning {
		c.log.Info("FFI completion waited for room in the completion channel", "eventId", eventID, "waited", waited)
	}
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
	c.releasePermit(&ev.msg)
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
	// StarvationDetected is true while any polled event is starving, or
	// while the oldest event waiting to be polled has waited longer than the
	// starvation threshold (the pollers are too slow, or dead).
	StarvationDetected bool `json:"starvation_detected"`
	// StarvingEventCount counts polled events older than the starvation
	// threshold.
	StarvingEventCount int `json:"starving_event_count"`
	// UnpolledCount is how many events wait to be polled.
	UnpolledCount int `json:"unpolled_count"`
	// OldestUnpolledAgeMs is how long the oldest of them has waited since
	// the worker handed it to the channel (nil when none).
	OldestUnpolledAgeMs *int64 `json:"oldest_unpolled_age_ms"`
	// LastPollAgeMs is how long ago a poller last called Poll (since the
	// channel was created, if none ever did).
	LastPollAgeMs int64 `json:"last_poll_age_ms"`
	// PollerStalled is true while events wait and no poll happened for
	// longer than the starvation threshold: the worker is not ready then.
	PollerStalled bool `json:"poller_stalled"`
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
	var unpolledAge time.Duration
	m.UnpolledCount, unpolledAge = c.unpolledLocked(now)
	if unpolledAge >= 0 {
		a := unpolledAge.Milliseconds()
		m.OldestUnpolledAgeMs = &a
	}
	sincePoll := now.Sub(c.lastPoll)
	m.LastPollAgeMs = sincePoll.Milliseconds()
	m.PollerStalled = m.UnpolledCount > 0 && sincePoll > c.cfg.StarvationWarningThreshold
	m.StarvationDetected = m.StarvingEventCount > 0 || unpolledAge > c.cfg.StarvationWarningThreshold
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
		m := c.metricsAt(now)
		if m.StarvingEventCount > 0 && rateOK(&c.lastWarn, now) {
			c.log.Info("FFI pollers are falling behind", "pending", m.PendingCount, "starving", m.StarvingEventCount,
				"oldestAgeMs", *m.OldestPendingAgeMs)
		}
		if m.PollerStalled && rateOK(&c.stallWarn, now) {
			c.log.Error(errors.New("no poll"), "FFI pollers stopped polling: events wait and no poll happened for longer than the starvation threshold; the worker reports not ready",
				"lastPollAgeMs", m.LastPollAgeMs, "waiting", m.UnpolledCount, "oldestWaitingAgeMs", *m.OldestUnpolledAgeMs,
				"thresholdMs", c.cfg.StarvationWarningThreshold.Milliseconds())
		}
	}
}

// rateOK reports whether 10 s have passed since the time in last, and if so
// moves last to now: one warning of a kind per 10 s.
func rateOK(last *atomic.Int64, now time.Time) bool {
	l := last.Load()
	return now.UnixNano()-l >= int64(10*time.Second) && last.CompareAndSwap(l, now.UnixNano())
}

// TakeUnpolled hands back every event no poller has taken (the caller must
// have stopped handing events in), releasing their permits, so the caller
// can return them to the queue with their attempt given back: no handler
// ever saw them. Pollers may keep polling meanwhile; each event goes to
// exactly one of them or here.
func (c *Channel) TakeUnpolled() []dispatch.StepMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.takeUnpolledLocked()
}

func (c *Channel) takeUnpolledLocked() []dispatch.StepMessage {
	var out []dispatch.StepMessage
	if c.head != nil {
		out = append(out, *c.head)
		c.head = nil
	}
	for {
		select {
		case m, ok := <-c.dispatch:
			if ok {
				out = append(out, m)
				continue
			}
		default:
		}
		break
	}
	for i := range out {
		c.releasePermit(&out[i])
	}
	return out
}

// Stop refuses further polls and completions and hands back every event the
// channel still holds, releasing their permits: polled ones (a foreign
// handler had them and did not complete them; their attempt happened) and
// unpolled ones (never handed to a handler). Call it only after the drain
// deadline: a foreign handler still working on a polled event will be
// refused when it completes.
func (c *Channel) Stop() (polled, unpolled []dispatch.StepMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	polled = make([]dispatch.StepMessage, 0, len(c.pending))
	for id, ev := range c.pending {
		if ev.completing {
			continue // its delivery is in progress; it settles itself
		}
		polled = append(polled, ev.msg)
		c.releasePermit(&ev.msg)
		delete(c.pending, id)
	}
	return polled, c.takeUnpolledLocked()
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
// tasker_ffi_oldest_event_age_ms and tasker_ffi_starving_events (polled
// events), tasker_ffi_unpolled_events, tasker_ffi_oldest_unpolled_age_ms and
// tasker_ffi_last_poll_age_ms (events waiting to be polled, and the
// pollers' pulse), all read at scrape time, and the FFI counters.
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
		gauge("tasker_ffi_unpolled_events", "FFI events waiting to be polled by a foreign handler.",
			func(m Metrics) float64 { return float64(m.UnpolledCount) }),
		gauge("tasker_ffi_oldest_unpolled_age_ms", "Age of the oldest FFI event waiting to be polled, in milliseconds (0 when none).",
			func(m Metrics) float64 {
				if m.OldestUnpolledAgeMs == nil {
					return 0
				}
				return float64(*m.OldestUnpolledAgeMs)
			}),
		gauge("tasker_ffi_last_poll_age_ms", "Milliseconds since a foreign poller last called poll (since start if none has).",
			func(m Metrics) float64 { return float64(m.LastPollAgeMs) }),
		c.timeouts, c.completions,
	} {
		if err := reg.Register(col); err != nil {
			return fmt.Errorf("register FFI metrics: %w", err)
		}
	}
	return nil
}
