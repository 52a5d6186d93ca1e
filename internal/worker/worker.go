package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/ffi"
	"github.com/seed-a17b38e7/workerpool-operator/internal/lograte"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// Options assemble a worker. Config and DatabaseURL are required.
type Options struct {
	// Config is the parsed worker.toml.
	Config config.Config
	// DatabaseURL is the queue's PostgreSQL DSN (env DATABASE_URL).
	DatabaseURL string
	// Handlers runs the steps; nil means an empty registry.
	Handlers *dispatch.Registry
	// Callback, when set, is the post-handler (domain event) hook.
	Callback dispatch.PostHandlerCallback
	// Logger receives the worker's logs.
	Logger logr.Logger
	// Version is reported in tasker_worker_info.
	Version string
	// Listener, when set, serves HTTP instead of listening on
	// Config.Worker.HTTP.ListenAddress (tests pass one on port 0).
	Listener net.Listener
	// Migrate applies the queue schema at start (idempotent and safe with
	// several workers starting at once).
	Migrate bool
	// Backoff overrides the queue's retry schedule (tests use short ones).
	Backoff []time.Duration
	// Jitter overrides the retry delay multiplier (tests use queue.NoJitter).
	Jitter func() float64
}

// Worker is one running worker process's core.
type Worker struct {
	cfg     config.Config
	id      string
	log     logr.Logger
	pool    *pgxpool.Pool
	queue   *queue.Queue
	reg     *prometheus.Registry
	ln      net.Listener
	claims  *claimSet
	version string

	dispatchCh    chan dispatch.StepMessage
	completionCh  chan *dispatch.Completion
	svc           *dispatch.HandlerDispatchService
	ffi           *ffi.Channel // nil unless ffi_dispatch.enabled
	consumer      consumer
	checker       *dispatch.CapacityChecker
	proc          *dispatch.CompletionProcessor
	monitors      []*dispatch.ChannelMonitor
	capacityFreed chan struct{}
	callbacks     *dispatch.CallbackRunner
	// givenBack carries completions whose results could not be delivered to
	// the completion channel, for giveBackLoop to settle as retryable
	// failures (see undelivered).
	givenBack chan *dispatch.Completion
	// hard ends when the drain deadline passes (or Run returns): statements
	// that otherwise run to their end (a claim, returning steps) stop then,
	// so the drain keeps its bound even with the database unreachable.
	hard     context.Context
	stopHard context.CancelFunc
	// failureLog and deadLog rate-limit the log lines of failed and
	// dead-lettered steps.
	failureLog, deadLog *lograte.Limiter

	started      atomic.Bool
	draining     atomic.Bool
	runOnce      sync.Once
	drainTimeout atomic.Int64 // nanoseconds; worker.drain.timeout_ms unless overridden
}

// New connects to the database and assembles a worker without starting it.
func New(ctx context.Context, opts Options) (*Worker, error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}
	if opts.DatabaseURL == "" {
		return nil, fmt.Errorf("database: %s is empty: want a PostgreSQL URL such as postgres://user@host:5432/db", config.EnvDatabaseURL)
	}
	if cfg.Worker.WorkerID == "" {
		if err := cfg.FillWorkerID(); err != nil {
			return nil, fmt.Errorf("worker id: %w", err)
		}
	}
	log := opts.Logger.WithValues("workerId", cfg.Worker.WorkerID)
	hd := cfg.Worker.MPSCChannels.HandlerDispatch
	pcfg, err := pgxpool.ParseConfig(opts.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("database: parse %s: %w", config.EnvDatabaseURL, err)
	}
	// Claims, settles, heartbeats and stats share the pool; the listener has
	// its own connection.
	pcfg.MaxConns = int32(max(4, min(16, hd.MaxConcurrentHandlers/8+4)))
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("database: connect: %w", err)
	}
	dispatchBuffer := hd.DispatchBufferSize
	if cfg.Worker.MPSCChannels.FFIDispatch.Enabled {
		dispatchBuffer = cfg.Worker.MPSCChannels.FFIDispatch.DispatchBufferSize
	}
	w := &Worker{
		cfg: cfg, id: cfg.Worker.WorkerID, log: log, pool: pool, claims: newClaimSet(), version: opts.Version,
		dispatchCh:    make(chan dispatch.StepMessage, dispatchBuffer),
		completionCh:  make(chan *dispatch.Completion, hd.CompletionBufferSize),
		capacityFreed: make(chan struct{}, 1),
		// Every running handler may end undelivered at once: room for all.
		givenBack:  make(chan *dispatch.Completion, hd.MaxConcurrentHandlers),
		reg:        prometheus.NewRegistry(),
		failureLog: lograte.New(20, 10*time.Second),
		deadLog:    lograte.New(20, 10*time.Second),
	}
	w.hard, w.stopHard = context.WithCancel(context.Background())
	w.drainTimeout.Store(int64(cfg.Worker.Drain.Timeout()))
	if err := w.assemble(ctx, opts); err != nil {
		pool.Close()
		return nil, err
	}
	return w, nil
}

// assemble builds the queue, dispatch core and metrics, and opens the HTTP
// listener (so a port clash fails at start, not later).
func (w *Worker) assemble(ctx context.Context, opts Options) error {
	if opts.Migrate {
		if err := queue.Migrate(ctx, w.pool); err != nil {
			return fmt.Errorf("migrate queue schema: %w", err)
		}
	}
	qc := w.cfg.Worker.Queue
	// A final-attempt claim that expired is dead-lettered only after one
	// more visibility timeout: its owner may just be late with a heartbeat.
	q, err := queue.New(w.pool, queue.Options{Queues: qc.Namespaces, MaxAttempts: qc.MaxAttempts,
		Backoff: opts.Backoff, Jitter: opts.Jitter, Logger: w.log.WithName("queue"),
		FinalAttemptGrace: qc.VisibilityTimeout()}, w.reg)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	w.queue = q
	m, err := dispatch.NewMetrics(w.reg)
	if err != nil {
		return err
	}
	hd := w.cfg.Worker.MPSCChannels.HandlerDispatch
	handlers := opts.Handlers
	if handlers == nil {
		handlers = dispatch.NewRegistry()
	}
	w.svc = dispatch.NewHandlerDispatchService(dispatch.ServiceConfig{
		WorkerID:              w.id,
		MaxConcurrentHandlers: hd.MaxConcurrentHandlers,
		HandlerTimeout:        hd.HandlerTimeout(),
		CompletionSendTimeout: hd.CompletionSendTimeout(),
		Undelivered:           w.undelivered,
	}, handlers, w.dispatchCh, w.completionCh, m, w.log.WithName("dispatch"))
	w.consumer = native{w.svc}
	fc := w.cfg.Worker.MPSCChannels.FFIDispatch
	if fc.Enabled {
		// Foreign handlers consume instead. Every event holds one of the
		// service's permits from the intake until it is settled, so
		// max_concurrent_handlers bounds what waits for and sits with
		// foreign pollers, and in-flight and load shedding count it.
		w.ffi = ffi.New(ffi.Config{
			ServiceID: fc.ServiceID, WorkerID: w.id,
			CompletionTimeout: fc.CompletionTimeout(), StarvationWarningThreshold: fc.StarvationWarningThreshold(),
			CompletionSendTimeout: hd.CompletionSendTimeout(),
			Permits:               w.svc.Semaphore(),
		}, w.dispatchCh, w.completionCh, m, w.log.WithName("ffi"))
		if err := w.ffi.RegisterMetrics(w.reg); err != nil {
			return err
		}
		w.consumer = foreign{ch: w.ffi, permits: w.svc.Semaphore()}
	}
	// Post-handler callbacks run once a result is durable, in the
	// completion processor (the key sits in the ffi_dispatch table for
	// upstream compatibility, but applies to native handlers too).
	w.callbacks = dispatch.NewCallbackRunner(opts.Callback, dispatch.CallbackStrategy(fc.CallbackStrategy), fc.CallbackTimeout(), 0,
		dispatch.DefaultServiceID, m, w.log.WithName("callbacks"))
	ls := w.cfg.Worker.LoadShedding
	w.checker = dispatch.NewCapacityChecker(w.svc.Semaphore(), float64(ls.WarningThresholdPercent), float64(ls.RefuseThresholdPercent), w.log.WithName("capacity"))
	w.proc = dispatch.NewCompletionProcessor(dispatch.ProcessorConfig{Callbacks: w.callbacks}, w.completionCh, w, m, w.log)
	w.monitors = []*dispatch.ChannelMonitor{
		dispatch.NewChannelMonitor("dispatch", func() int { return len(w.dispatchCh) }, cap(w.dispatchCh),
			hd.SaturationWarningThreshold, hd.SaturationCriticalThreshold, w.log),
		dispatch.NewChannelMonitor("completion", func() int { return len(w.completionCh) }, cap(w.completionCh),
			hd.SaturationWarningThreshold, hd.SaturationCriticalThreshold, w.log),
	}
	if err := w.registerMetrics(); err != nil {
		return err
	}
	w.ln = opts.Listener
	if w.ln == nil {
		if w.ln, err = net.Listen("tcp", w.cfg.Worker.HTTP.ListenAddress); err != nil {
			return fmt.Errorf("listen on worker.http.listen_address %q: %w", w.cfg.Worker.HTTP.ListenAddress, err)
		}
	}
	return nil
}

func (w *Worker) registerMetrics() error {
	for _, mon := range w.monitors {
		if err := mon.Register(w.reg); err != nil {
			return fmt.Errorf("register channel metrics: %w", err)
		}
	}
	if err := w.svc.RegisterMetrics(w.reg); err != nil {
		return err
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tasker_worker_info", Help: "Always 1; labels identify the worker build and id.",
		ConstLabels: prometheus.Labels{"version": w.version, "worker_id": w.id},
	})
	info.Set(1)
	for _, c := range []prometheus.Collector{
		info,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tasker_worker_claims_held", Help: "Claims held and not yet settled (kept alive by heartbeats)."},
			func() float64 { return float64(w.claims.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tasker_worker_draining", Help: "1 while the worker drains after SIGTERM."},
			func() float64 { return b2f(w.draining.Load()) }),
	} {
		if err := w.reg.Register(c); err != nil {
			return fmt.Errorf("register worker metrics: %w", err)
		}
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Addr is the address the HTTP endpoints listen on.
func (w *Worker) Addr() net.Addr { return w.ln.Addr() }

// FFI is the channel foreign handlers poll and complete through; nil unless
// worker.mpsc_channels.ffi_dispatch.enabled.
func (w *Worker) FFI() *ffi.Channel { return w.ffi }

// SetDrainTimeout overrides worker.drain.timeout_ms for the next drain, for
// callers that choose the bound when they stop (the C ABI's stop).
func (w *Worker) SetDrainTimeout(d time.Duration) {
	if d > 0 {
		w.drainTimeout.Store(int64(d))
	}
}

// Queue exposes the worker's queue (tools and tests enqueue through it).
func (w *Worker) Queue() *queue.Queue { return w.queue }

// Registry is the worker's metrics registry.
func (w *Worker) Registry() *prometheus.Registry { return w.reg }

// Run serves until ctx ends (SIGTERM), then drains: it stops claiming,
// reports not ready, returns unstarted steps to the queue at once, lets
// running handlers finish, settles their results and returns, all within
// worker.drain.timeout_ms. A nil error means nothing was left behind.
func (w *Worker) Run(ctx context.Context) error {
	ran := false
	w.runOnce.Do(func() { ran = true })
	if !ran {
		return errors.New("worker: Run called twice")
	}
	defer w.stopHard()
	bg, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()

	consumerDone := make(chan struct{})
	go func() { defer close(consumerDone); w.consumer.run(bg) }()
	procCtx, stopProc := context.WithCancel(context.Background())
	defer stopProc()
	procDone := make(chan error, 1)
	go func() { procDone <- w.proc.Run(procCtx) }()
	for _, mon := range w.monitors {
		go mon.Watch(bg, 0)
	}
	go w.heartbeat(bg)
	go w.giveBackLoop(bg)
	go w.retention(bg)
	srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(w.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.log.Error(err, "metrics server stopped")
		}
	}()
	intakeDone := make(chan struct{})
	go func() { defer close(intakeDone); w.intake(ctx) }()
	w.started.Store(true)
	w.log.Info("worker running", "queues", w.cfg.Worker.Queue.Namespaces, "maxConcurrentHandlers", w.svc.Semaphore().Capacity(),
		"listen", w.ln.Addr().String())

	<-ctx.Done()
	deadline := time.Now().Add(time.Duration(w.drainTimeout.Load()))
	err := w.drain(deadline, intakeDone, procDone, stopProc)
	stopBackground()
	<-consumerDone
	// The HTTP server goes within what is left of the budget.
	shutdownCtx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if srv.Shutdown(shutdownCtx) != nil {
		_ = srv.Close()
	}
	// Closing the pool waits for its connections to close, and with the
	// database unreachable pgx waits up to 15 s per connection for a cancel
	// request: the rest happens after Run has returned (the process exits,
	// or a library caller goes on).
	closed := make(chan struct{})
	go func() { w.pool.Close(); close(closed) }()
	t := time.NewTimer(max(time.Until(deadline), 0))
	defer t.Stop()
	select {
	case <-closed:
	case <-t.C:
	}
	return err
}

// drainSettleShare is the part of the drain timeout kept for settling
// results after the handlers' own deadline (at most drainSettleMax).
const (
	drainSettleShare = 4 // a quarter
	drainSettleMax   = 5 * time.Second
)

// drain is the SIGTERM path; see Run. Everything it does ends by deadline:
// handlers get the budget less a share kept for settling their results;
// statements that would otherwise run on (a claim in flight, returning
// steps) are cancelled at the deadline; whatever is unsettled then stays
// claimed in the queue and is redelivered when its claim expires.
func (w *Worker) drain(deadline time.Time, intakeDone <-chan struct{}, procDone <-chan error, stopProc context.CancelFunc) error {
	w.draining.Store(true)
	start := time.Now()
	timeout := deadline.Sub(start)
	atDeadline := time.AfterFunc(timeout, w.stopHard)
	defer atDeadline.Stop()
	ctx := w.hard
	handlersCtx, cancelHandlers := context.WithDeadline(ctx, deadline.Add(-min(timeout/drainSettleShare, drainSettleMax)))
	defer cancelHandlers()
	w.log.Info("draining: stopped claiming", "drainTimeout", timeout, "claimsHeld", w.claims.len())
	var errs []error
	<-intakeDone // a claim in flight ends at the deadline at the latest
	unstarted := w.consumer.stop()
	if err := w.release(ctx, unstarted); err != nil {
		errs = append(errs, err)
	}
	abandoned, late, drainErr := w.consumer.finish(handlersCtx)
	if err := w.release(ctx, late); err != nil {
		errs = append(errs, err)
	}
	if len(abandoned) > 0 {
		if err := w.abandon(ctx, abandoned); err != nil {
			errs = append(errs, err)
		}
	}
	if drainErr != nil {
		w.log.Info("drain deadline for handlers passed", "detail", drainErr.Error())
	}
	// Handlers that ignore cancellation may use what is left of the budget;
	// whatever still runs then stays claimed and is redelivered when its
	// claim expires.
	if w.consumer.quiesce(time.Until(deadline)) {
		close(w.completionCh) // every producer is done: the processor flushes and returns
	} else {
		errs = append(errs, errors.New("handlers still running at the drain deadline; their steps will be redelivered"))
	}
	select {
	case err := <-procDone:
		if err != nil {
			errs = append(errs, err)
		}
	case <-ctx.Done():
		stopProc()
		if err := <-procDone; err != nil {
			errs = append(errs, err)
		}
	}
	if n := w.callbacks.Wait(ctx); n > 0 {
		w.log.Info("post-handler callbacks still running at the drain deadline", "running", n)
	}
	w.log.Info("drained", "took", time.Since(start), "returnedToQueue", len(unstarted)+len(late), "abandoned", len(abandoned),
		"stillClaimed", w.claims.len())
	return errors.Join(errs...)
}

// release returns never-started steps to the queue at once, their attempt
// given back.
func (w *Worker) release(ctx context.Context, msgs []dispatch.StepMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	claims := make([]queue.Claim, len(msgs))
	for i, m := range msgs {
		claims[i] = receiptClaim(m.Receipt)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := w.queue.Release(ctx, claims); err != nil {
		return fmt.Errorf("return %d unstarted steps to the queue (they will reappear when their claims expire): %w", len(claims), err)
	}
	w.claims.remove(claims...)
	return nil
}

// abandon settles steps a foreign handler had polled but did not complete
// before the worker stopped: their attempt happened, so each is a retryable
// ffi_abandoned failure (retried after its backoff, dead once its attempts
// are used up), never an attempt given back.
func (w *Worker) abandon(ctx context.Context, msgs []dispatch.StepMessage) error {
	batch := make([]*dispatch.Completion, len(msgs))
	for i, m := range msgs {
		batch[i] = &dispatch.Completion{Message: m, Result: dispatch.FailureResult(m.StepUUID,
			"FFI handler polled the event but did not complete it before the worker stopped",
			dispatch.ErrorTypeFFIAbandoned, true, 0, map[string]any{"event_id": m.EventID})}
	}
	if err := w.Persist(ctx, batch); err != nil {
		return fmt.Errorf("settle %d polled but uncompleted FFI steps (they will reappear when their claims expire): %w", len(msgs), err)
	}
	return nil
}

// waitFor runs wait and reports whether it returned within d.
func waitFor(wait func(), d time.Duration) bool {
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// eventID names one dispatch (one attempt) of a step: the row and its claim
// token, which is unique per claim.
func eventID(c queue.Claim) string {
	return strconv.FormatInt(c.ID, 10) + "." + strconv.FormatInt(c.Token, 10)
}
