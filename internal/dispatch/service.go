package dispatch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a17b38e7/workerpool-operator/internal/lograte"
)

// maxIdleWorkers bounds how many parked handler goroutines are kept for reuse
// beyond one per permit.
const maxIdleWorkers = 1024

// Defaults of the native dispatch service (upstream's values).
const (
	DefaultServiceID             = "handler-dispatch"
	DefaultMaxConcurrentHandlers = 10
	DefaultHandlerTimeout        = 30 * time.Second
	DefaultCompletionSendTimeout = 10 * time.Second
)

// ServiceConfig tunes a HandlerDispatchService; zero values take the defaults.
type ServiceConfig struct {
	// ServiceID names the service in logs and failure metadata.
	ServiceID string
	// WorkerID is stamped into every result's metadata.
	WorkerID string
	// MaxConcurrentHandlers is the number of permits.
	MaxConcurrentHandlers int
	// HandlerTimeout bounds a handler unless the step carries its own timeout.
	HandlerTimeout time.Duration
	// CompletionSendTimeout bounds how long a result waits for room in the
	// completion channel before it is counted as undelivered.
	CompletionSendTimeout time.Duration
	// Undelivered, when set, receives every completion whose result could
	// not be sent within CompletionSendTimeout, so that its owner can give
	// the step back to its queue (the worker settles it as a retryable
	// failure and stops heartbeating its claim). It must not block for long:
	// it runs on the handler's goroutine. Without it the result is dropped
	// and the step waits for its claim to expire.
	Undelivered func(*Completion)
	// Semaphore lets a caller share the permits with another consumer; nil
	// creates one with MaxConcurrentHandlers permits.
	Semaphore *Semaphore
}

func (c *ServiceConfig) defaults() {
	if c.ServiceID == "" {
		c.ServiceID = DefaultServiceID
	}
	if c.MaxConcurrentHandlers <= 0 {
		c.MaxConcurrentHandlers = DefaultMaxConcurrentHandlers
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = DefaultHandlerTimeout
	}
	if c.CompletionSendTimeout <= 0 {
		c.CompletionSendTimeout = DefaultCompletionSendTimeout
	}
}

// ShutdownReport says what became of the work the service held when it shut
// down, so the caller can return it to the queue: nothing is dropped.
type ShutdownReport struct {
	// Unstarted messages never reached a handler; return them to the queue
	// at once (their attempt did not happen).
	Unstarted []StepMessage
	// Cancelled is how many handlers were still running at the drain
	// deadline and had their context cancelled. Their results, if any, are
	// delivered as retryable failures; the rest are redelivered by the queue.
	Cancelled int
}

// HandlerDispatchService consumes the dispatch channel and runs native Go
// handlers. A permit is taken before a handler goroutine starts, so when all
// permits are busy the service stops reading and the bounded dispatch channel
// pushes back on the intake. Every message ends as exactly one result on the
// completion channel, or is handed back by Shutdown.
type HandlerDispatchService struct {
	cfg        ServiceConfig
	registry   *Registry
	dispatch   <-chan StepMessage
	completion chan<- *Completion
	sem        *Semaphore
	metrics    *Metrics
	log        logr.Logger

	// slots holds the latest step dispatched with each permit: the running
	// one while the permit is held. A finished step is left in place (its
	// state says it is done) for the loop to overwrite or the watchdog to
	// clear on its next pass, rather than cleared by the handler's
	// goroutine, which would pull the loop's cache line over on every step.
	slots []atomic.Pointer[stepState]
	deadlineWatch
	// running counts dispatched steps until their handler goroutine is done
	// with them. The loop and the handlers write it on every step from
	// different cores; the padding keeps the read-mostly fields around it
	// off its cache line.
	_           [64]byte
	running     sync.WaitGroup
	_           [64]byte
	overdue     atomic.Int64 // handlers still running past their timeout
	workers     atomic.Int32 // handler goroutines alive, busy or idle
	maxWorkers  int32
	stopping    chan struct{}
	stopOnce    sync.Once
	watchDone   chan struct{}   // stops the watchdog and idle workers once no handler runs
	ready       chan *stepState // unbuffered: hand-off to an idle worker
	readyOnce   sync.Once
	interrupt   chan struct{} // closed by Shutdown or Abort: wakes a loop waiting for a permit
	interruptMu sync.Once
	watchOnce   sync.Once
	loopDone    chan struct{}
	started     atomic.Bool
	held        *StepMessage // message the loop held when it stopped; read after loopDone
	// undeliveredLog rate-limits the log line of undelivered results: a
	// stalled database makes every result undelivered at once.
	undeliveredLog *lograte.Limiter
}

// NewHandlerDispatchService wires a service to its channels. completionMonitor
// watches the completion channel (it may be shared with the FFI channel) and
// may be nil.
func NewHandlerDispatchService(cfg ServiceConfig, registry *Registry, dispatch <-chan StepMessage,
	completion chan<- *Completion, metrics *Metrics, log logr.Logger) *HandlerDispatchService {
	cfg.defaults()
	sem := cfg.Semaphore
	if sem == nil {
		sem = NewSemaphore(cfg.MaxConcurrentHandlers)
	}
	log = log.WithValues("serviceId", cfg.ServiceID)
	return &HandlerDispatchService{
		cfg: cfg, registry: registry, dispatch: dispatch, completion: completion, sem: sem,
		metrics: metrics, log: log,
		slots:          make([]atomic.Pointer[stepState], sem.Capacity()),
		maxWorkers:     int32(min(sem.Capacity()+maxIdleWorkers, math.MaxInt32)),
		deadlineWatch:  deadlineWatch{wake: make(chan struct{}, 1)},
		undeliveredLog: lograte.New(10, 10*time.Second),
		ready:          make(chan *stepState),
		interrupt:      make(chan struct{}),
		stopping:       make(chan struct{}), loopDone: make(chan struct{}), watchDone: make(chan struct{}),
	}
}

// Semaphore exposes the service's permits so load shedding watches the real one.
func (s *HandlerDispatchService) Semaphore() *Semaphore { return s.sem }

// InFlight is the number of handlers running (permits held).
func (s *HandlerDispatchService) InFlight() int { return s.sem.InUse() }

// Overdue is the number of handlers still running after their step timed out.
// They keep their permits, so concurrency stays truly bounded.
func (s *HandlerDispatchService) Overdue() int64 { return s.overdue.Load() }

// RegisterMetrics exports tasker_dispatch_in_flight, tasker_dispatch_capacity
// and tasker_dispatch_overdue_handlers, read at scrape time.
func (s *HandlerDispatchService) RegisterMetrics(reg prometheus.Registerer) error {
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tasker_dispatch_in_flight", Help: "Handlers running (permits held)."},
			func() float64 { return float64(s.sem.InUse()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tasker_dispatch_capacity", Help: "Permits: max_concurrent_handlers."},
			func() float64 { return float64(s.sem.Capacity()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tasker_dispatch_overdue_handlers", Help: "Handlers still running after their step timed out (they keep their permit)."},
			func() float64 { return float64(s.overdue.Load()) }),
	} {
		if err := reg.Register(g); err != nil {
			return fmt.Errorf("register dispatch gauges: %w", err)
		}
	}
	return nil
}

// Run consumes the dispatch channel until it is closed, Shutdown is called or
// ctx ends. It must be called once.
func (s *HandlerDispatchService) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("dispatch service: Run called twice")
	}
	defer close(s.loopDone)
	stop := s.stopping
	go s.watchdog(s.watchDone)
	// The message is received straight into the state of the step that will
	// run it: a message held in a loop variable escaped to the heap (through
	// held) and cost an extra allocation and copy per step.
	var st *stepState
	for {
		if st == nil {
			st = new(stepState)
		}
		var ok bool
		select {
		case <-stop:
			return nil
		default:
		}
		select {
		case st.c.Message, ok = <-s.dispatch: // fast path: work is waiting
		default:
			select {
			case <-stop:
				return nil
			case <-ctx.Done():
				return nil
			case st.c.Message, ok = <-s.dispatch:
			}
		}
		if !ok {
			return nil
		}
		switch p, err := s.sem.acquireOr(s.interrupt); {
		case err == nil:
			st.permit = p
			s.slots[p].Store(st)
			s.running.Add(1)
			s.start(st)
		case errors.Is(err, errStopped):
			s.held = &st.c.Message
			return nil
		default:
			s.semaphoreFailure(st)
		}
		st = nil // handed on
	}
}

// semaphoreFailure: a step that cannot get a permit becomes an explicit
// retryable failure on the completion channel, never a silently dropped step.
func (s *HandlerDispatchService) semaphoreFailure(st *stepState) {
	msg := &st.c.Message
	s.metrics.SemaphoreFailures.Inc()
	s.log.Error(ErrSemaphoreClosed, "cannot execute handler, generating failure result", "stepUuid", msg.StepUUID)
	st.permit = -1
	st.c.Result = FailureResult(msg.StepUUID, "Handler execution failed - semaphore closed during acquisition",
		ErrorTypeSemaphoreAcquisitionFailed, true, 0,
		map[string]any{"service_id": s.cfg.ServiceID, "reason": "semaphore closed", "task_uuid": msg.TaskUUID})
	s.deliver(st)
}

// step states for the race between a handler finishing and its deadline.
const (
	stepRunning int32 = iota
	stepFinished
	stepTimedOut
)

// stepState is everything one dispatched step needs, in one allocation: the
// message and its completion, the handler's context (which holds the
// deadline), and who won the race between the handler and its deadline. It
// is allocated for every step, so it is kept small (440 bytes, the 448-byte size class):
// whatever can be derived (the service, the timeout) is not stored.
type stepState struct {
	c      Completion
	ctx    stepContext
	permit Permit
	state  atomic.Int32
	// expiring is held by expire from before it claims the step until the
	// timeout failure is delivered, so the handler's goroutine, which waits
	// for it before counting the step done, cannot let Wait return (and the
	// caller close the completion channel) while that send is under way.
	expiring sync.Mutex
}

// start hands a step whose permit is held to an idle handler goroutine, or
// starts a new one. Reusing goroutines matters: a fresh goroutine's stack
// grows (is copied) on its way through the completion send, which cost more
// than the rest of dispatch together.
//
// The hand-off is a non-blocking send on an unbuffered channel, so it
// succeeds only if an idle worker is already waiting to receive: a step is
// never parked behind a busy worker.
func (s *HandlerDispatchService) start(st *stepState) {
	select {
	case s.ready <- st:
	default:
		s.workers.Add(1)
		go s.worker(st)
	}
}

// worker runs steps until it is not needed: after each step it waits for the
// next hand-off, unless more workers exist than permits plus maxIdleWorkers
// (a burst of slow completion sends can leave that many behind). Counting
// workers only when one starts or ends, rather than counting idle ones around
// every hand-off, keeps shared atomic writes off the per-step path. Shutdown
// closes the ready channel, which ends every waiting worker.
func (s *HandlerDispatchService) worker(st *stepState) {
	defer s.workers.Add(-1)
	for {
		s.run(st)
		if s.workers.Load() > s.maxWorkers {
			return
		}
		next, ok := <-s.ready
		if !ok {
			return
		}
		st = next
	}
}

// stepTimeout is the step's own timeout if it carries one, else the service's.
func (s *HandlerDispatchService) stepTimeout(msg *StepMessage) time.Duration {
	if msg.Timeout > 0 {
		return msg.Timeout
	}
	return s.cfg.HandlerTimeout
}

// run executes one handler. The loop has already taken st.permit. The
// uncommon outcomes are handled out of line to keep this frame small: it is
// on the stack of every handler.
func (s *HandlerDispatchService) run(st *stepState) {
	defer s.running.Done()
	msg := &st.c.Message
	h, ok := s.registry.Lookup(msg.Handler)
	if !ok {
		s.handlerNotFound(st)
		return
	}
	start := time.Now()
	// Deadlines are kept on the monotonic clock, as offsets from monoEpoch,
	// so a step of the wall clock neither fires nor postpones them.
	s.armDeadline(st, int64(start.Sub(monoEpoch)+s.stepTimeout(msg)))
	out, err, panicked := invokeHandler(&st.ctx, h, msg)
	elapsed := time.Since(start) // monotonic clock only: half the cost of time.Now here
	if !st.state.CompareAndSwap(stepRunning, stepFinished) {
		s.discardLate(st, elapsed)
		return
	}
	// Release the permit before sending the result: a send that waits on a
	// full completion channel must not also keep new handlers from starting.
	s.release(st)
	fillResult(&st.c.Result, msg, out, s.shutdownError(st, err), panicked, elapsed, start.Add(elapsed))
	s.deliver(st)
}

// handlerNotFound fails a step whose handler is not registered.
//
//go:noinline
func (s *HandlerDispatchService) handlerNotFound(st *stepState) {
	msg := &st.c.Message
	st.state.Store(stepFinished) // no deadline was armed, so nothing races this
	s.release(st)
	st.c.Result = HandlerNotFoundResult(msg)
	s.deliver(st)
}

// discardLate drops the result of a handler that returned after its step
// timed out: expire delivers (or is delivering) the timeout failure.
//
//go:noinline
func (s *HandlerDispatchService) discardLate(st *stepState, elapsed time.Duration) {
	s.release(st)
	s.overdue.Add(-1)
	s.metrics.LateResults.Inc()
	s.log.V(1).Info("discarding late handler result", "stepUuid", st.c.Message.StepUUID, "elapsed", elapsed)
	st.expiring.Lock() // wait until expire has handed its failure over
	st.expiring.Unlock()
}

// shutdownError rewords the error of a handler that gave up because Shutdown
// cancelled it.
func (s *HandlerDispatchService) shutdownError(st *stepState, err error) error {
	if err != nil && errors.Is(err, context.Canceled) && st.ctx.Err() == context.Canceled {
		return errors.New("Handler cancelled: worker shutting down before it finished")
	}
	return err
}

// expire runs at the step's deadline. If the handler has not finished, the
// timeout failure is delivered at once and the handler's context cancelled;
// the handler keeps its permit until it actually returns, so concurrency
// stays truly bounded.
func (s *HandlerDispatchService) expire(st *stepState) {
	st.expiring.Lock()
	defer st.expiring.Unlock()
	if !st.state.CompareAndSwap(stepRunning, stepTimedOut) {
		return
	}
	s.overdue.Add(1)
	st.ctx.cancel(context.DeadlineExceeded)
	timeout := s.stepTimeout(&st.c.Message)
	st.c.Result = FailureResult(st.c.Message.StepUUID, fmt.Sprintf("Handler timed out after %dms", timeout.Milliseconds()),
		ErrorTypeHandlerTimeout, true, timeout, nil)
	s.deliver(st)
}

// release frees the step's permit. The step stays in its slot, marked
// finished or timed out, until the loop reuses the slot or the watchdog
// clears it.
func (s *HandlerDispatchService) release(st *stepState) {
	s.sem.Release(st.permit)
}

// handlerPanic is what a recovered handler panic leaves behind.
type handlerPanic struct {
	message string
	stack   []string
}

// invokeHandler runs h, turning a panic into a handlerPanic.
func invokeHandler(ctx context.Context, h Handler, msg *StepMessage) (out []byte, err error, panicked *handlerPanic) {
	defer func() {
		if p := recover(); p != nil {
			panicked = &handlerPanic{message: fmt.Sprint(p), stack: strings.Split(strings.TrimSpace(string(debug.Stack())), "\n")}
		}
	}()
	out, err = h.Handle(ctx, msg)
	return out, err, nil
}

// fillResult writes a handler's outcome into r, per the failure table. It
// fills in place because a result is large and copying it through return
// values grew every handler goroutine's stack.
func fillResult(r *StepExecutionResult, msg *StepMessage, out []byte, err error, panicked *handlerPanic, elapsed time.Duration, now time.Time) {
	switch {
	case panicked != nil:
		*r = FailureResult(msg.StepUUID, "Handler panicked: "+panicked.message, ErrorTypeHandlerPanic, false, elapsed, nil)
		r.Error.Backtrace = panicked.stack
	case err != nil:
		*r = failureFromError(msg, err, elapsed)
	default:
		r.StepUUID = msg.StepUUID
		r.Success = true
		r.Result = out
		if out == nil {
			r.Result = nullJSON
		}
		r.Status = StatusCompleted
		r.Metadata.ExecutionTimeMs = elapsed.Milliseconds()
		r.Metadata.CompletedAt = now.UTC()
	}
}

// failureFromError maps a handler's error: a *StepError keeps its type and
// retryability, anything else is a retryable handler_error.
func failureFromError(msg *StepMessage, err error, elapsed time.Duration) StepExecutionResult {
	var se *StepError
	if errors.As(err, &se) {
		typ := se.ErrorType
		if typ == "" {
			typ = ErrorTypeHandlerError
		}
		r := FailureResult(msg.StepUUID, se.Message, typ, se.Retryable, elapsed, nil)
		r.Error.ErrorCode, r.Metadata.ErrorCode, r.Error.Backtrace = se.ErrorCode, se.ErrorCode, se.Backtrace
		return r
	}
	return FailureResult(msg.StepUUID, err.Error(), ErrorTypeHandlerError, true, elapsed, nil)
}

// deliver sends a result to the completion channel within the send timeout.
// A result that cannot be delivered is counted, logged (rate-limited) and
// handed to cfg.Undelivered, which gives its step back to the queue with the
// attempt counted. Post-handler callbacks do not run here: the completion
// processor runs them once the result is durable.
func (s *HandlerDispatchService) deliver(st *stepState) {
	res := &st.c.Result
	res.Metadata.WorkerID = s.cfg.WorkerID
	if SendCompletion(s.completion, &st.c, s.cfg.CompletionSendTimeout) {
		return
	}
	s.metrics.UndeliveredResults.Inc()
	if s.undeliveredLog.Allow() {
		s.log.Error(errors.New("completion channel full"), "result not delivered within the send timeout; the step goes back to the queue and is retried after its backoff",
			"stepUuid", res.StepUUID, "handler", st.c.Message.Handler, "queue", st.c.Message.Queue, "timeout", s.cfg.CompletionSendTimeout,
			"outcome", string(res.Outcome()), "suppressedSinceLast", s.undeliveredLog.Suppressed())
	}
	if s.cfg.Undelivered != nil {
		s.cfg.Undelivered(&st.c)
	}
}

// SendCompletion puts c on ch, waiting at most timeout for room. It reports
// whether the completion was sent; once sent, c belongs to the receiver.
func SendCompletion(ch chan<- *Completion, c *Completion, timeout time.Duration) bool {
	select {
	case ch <- c:
		return true
	default:
	}
	// A full channel is usually a consumer a moment behind: yielding lets it
	// drain, and is far cheaper than arming a timer.
	for range 3 {
		runtime.Gosched()
		select {
		case ch <- c:
			return true
		default:
		}
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ch <- c:
		return true
	case <-t.C:
		return false
	}
}

// Shutdown stops taking messages, hands back every message that never
// started (the one the loop held and whatever is still buffered in the
// dispatch channel — the caller must have stopped producing), and waits for
// running handlers until ctx ends. At that deadline the handlers' contexts
// are cancelled and counted in the report.
func (s *HandlerDispatchService) Shutdown(ctx context.Context) (ShutdownReport, error) {
	rep := ShutdownReport{Unstarted: s.StopIntake()}
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	select {
	case <-done:
		return rep, nil
	case <-ctx.Done():
		for i := range s.slots {
			if st := s.slots[i].Load(); st != nil && st.state.Load() == stepRunning && st.ctx.cancel(context.Canceled) {
				rep.Cancelled++
			}
		}
		return rep, fmt.Errorf("drain deadline passed with %d handlers running: %w", rep.Cancelled, ctx.Err())
	}
}

// Wait blocks until every handler goroutine has returned and delivered (or
// discarded) its result, so the completion channel can then be closed.
func (s *HandlerDispatchService) Wait() {
	s.running.Wait()
	if s.stopped() {
		s.watchOnce.Do(func() { close(s.watchDone) })
	}
}

func (s *HandlerDispatchService) stopped() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// Abort closes the semaphore: from then on every message the loop takes
// becomes a retryable semaphore_acquisition_failed result.
func (s *HandlerDispatchService) Abort() {
	s.sem.Close()
	s.interruptMu.Do(func() { close(s.interrupt) })
}
