package ffi

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

// Poller defaults.
const (
	// DefaultPollerIdleBackoff is the first wait after an empty Poll.
	DefaultPollerIdleBackoff = time.Millisecond
	// DefaultPollerMaxIdleBackoff caps the wait between empty Polls, which
	// is the most latency an idle poller adds to a step.
	DefaultPollerMaxIdleBackoff = 25 * time.Millisecond
)

// PollerConfig tunes a Poller; zero values take the defaults.
type PollerConfig struct {
	// Pollers is how many goroutines poll at once, like that many foreign
	// threads each looping over poll / handle / complete (default 1).
	Pollers int
	// Hold is the least time an event stays pending: after its handler has
	// run, the poller waits until Hold has passed since it polled the event,
	// and only then completes it. A Hold above the channel's starvation
	// warning threshold makes the poller a slow one on purpose (its events
	// age, starvation is detected and reported); a Hold above the
	// completion timeout makes every event an ffi_timeout. 0 completes as
	// soon as the handler returns.
	Hold time.Duration
	// IdleBackoff is the first wait after Poll found nothing; it doubles up
	// to MaxIdleBackoff and resets when an event arrives.
	IdleBackoff time.Duration
	// MaxIdleBackoff caps the wait between empty Polls.
	MaxIdleBackoff time.Duration
}

func (c *PollerConfig) defaults() {
	if c.Pollers < 1 {
		c.Pollers = 1
	}
	if c.Hold < 0 {
		c.Hold = 0
	}
	if c.IdleBackoff <= 0 {
		c.IdleBackoff = DefaultPollerIdleBackoff
	}
	if c.MaxIdleBackoff < c.IdleBackoff {
		c.MaxIdleBackoff = max(DefaultPollerMaxIdleBackoff, c.IdleBackoff)
	}
}

// Poller is a foreign-handler stand-in written in Go: goroutines that drive
// a Channel exactly as a Python or Ruby poller does through the C ABI (Poll,
// run the handler, Complete), but run handlers from a dispatch.Registry.
//
// It exists because the FFI path has to be exercised where no foreign
// runtime is available: the stock tasker-worker image has no Python or Ruby,
// yet end-to-end tests and demos must show a pool whose FFI pollers fall
// behind (pending events age, the Starving condition turns True and back).
// With Hold it is a deliberately slow poller. It goes through the channel's
// public Poll / Complete, never around them, so pending tracking,
// starvation, timeouts, callbacks and the drain behave as they do for a
// foreign poller. It is not a faster native dispatch: for Go handlers in
// production, leave ffi_dispatch disabled and let HandlerDispatchService run
// them.
//
// Results are mapped as native dispatch maps them (dispatch.RunHandler):
// success; handler_error, retryable unless the handler returned
// dispatch.Permanent (or a *StepError saying so); handler_not_found and
// handler_panic (recovered), not retryable; handler_timeout, retryable, when
// the handler fails after its deadline. A handler's context ends at the
// channel's completion timeout counted from the poll (or sooner, at the
// step's own timeout), since the channel turns the event into an ffi_timeout
// then anyway.
//
// Lifetime: Run returns when its context ends and every poller goroutine has
// finished its current event. The worker's drain waits for pending FFI
// events until the drain timeout, so the context must outlive the worker's
// Run: cancel it after Run returns. Once the channel is stopped Poll finds
// nothing, and a late Complete is refused (and logged) with Stopped.
type Poller struct {
	ch       *Channel
	handlers *dispatch.Registry
	cfg      PollerConfig
	log      logr.Logger
}

// NewPoller creates a poller of ch that runs handlers from handlers.
func NewPoller(ch *Channel, handlers *dispatch.Registry, cfg PollerConfig, log logr.Logger) *Poller {
	cfg.defaults()
	return &Poller{ch: ch, handlers: handlers, cfg: cfg, log: log}
}

// Config returns the effective configuration (defaults applied).
func (p *Poller) Config() PollerConfig { return p.cfg }

// Run polls with cfg.Pollers goroutines until ctx ends, then waits for them
// to return. Cancelling ctx also cancels the handlers' contexts; a handler
// that ignores its context delays Run's return until it returns.
func (p *Poller) Run(ctx context.Context) {
	cc := p.ch.Config()
	p.log.Info("FFI poller running", "pollers", p.cfg.Pollers, "hold", p.cfg.Hold,
		"starvationWarningThreshold", cc.StarvationWarningThreshold, "completionTimeout", cc.CompletionTimeout)
	var wg sync.WaitGroup
	for i := range p.cfg.Pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.loop(ctx, p.log.WithValues("poller", i))
		}()
	}
	wg.Wait()
	p.log.Info("FFI poller stopped")
}

// loop is one poller goroutine: poll, handle, hold, complete.
func (p *Poller) loop(ctx context.Context, log logr.Logger) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	backoff := p.cfg.IdleBackoff
	for ctx.Err() == nil {
		msg, ok := p.ch.Poll()
		if !ok {
			if !sleepCtx(ctx, timer, backoff) {
				return
			}
			backoff = min(2*backoff, p.cfg.MaxIdleBackoff)
			continue
		}
		backoff = p.cfg.IdleBackoff
		p.handle(ctx, log, timer, &msg, time.Now())
	}
}

// handle runs one polled event to its completion.
func (p *Poller) handle(ctx context.Context, log logr.Logger, timer *time.Timer, msg *dispatch.StepMessage, polled time.Time) {
	res := p.execute(ctx, msg, polled)
	if wait := time.Until(polled.Add(p.cfg.Hold)); wait > 0 {
		// Cut short when ctx ends: the result is ready, so deliver it
		// rather than leave the event to time out.
		sleepCtx(ctx, timer, wait)
	}
	backoff := p.cfg.IdleBackoff
	for {
		st, err := p.ch.Complete(msg.EventID, res)
		if st == Completed {
			return
		}
		kv := []any{"eventId", msg.EventID, "stepUuid", msg.StepUUID, "status", st.String(),
			"heldFor", time.Since(polled).Round(time.Millisecond)}
		if err != nil {
			kv = append(kv, "error", err.Error())
		}
		if st != RetryLater {
			log.Info("FFI poller: completion not accepted", kv...)
			return
		}
		if ctx.Err() != nil {
			log.Info("FFI poller: completion not accepted and the poller is stopping; the event stays pending "+
				"(it times out, or the drain returns it to the queue)", kv...)
			return
		}
		log.Info("FFI poller: completion not accepted yet; retrying", append(kv, "retryIn", backoff)...)
		sleepCtx(ctx, timer, backoff)
		backoff = min(2*backoff, p.cfg.MaxIdleBackoff)
	}
}

// execute runs the event's handler bounded by the completion timeout (or the
// step's own, shorter, timeout) and maps the outcome.
func (p *Poller) execute(ctx context.Context, msg *dispatch.StepMessage, polled time.Time) dispatch.StepExecutionResult {
	h, ok := p.handlers.Lookup(msg.Handler)
	if !ok {
		return dispatch.HandlerNotFoundResult(msg)
	}
	timeout := p.ch.Config().CompletionTimeout
	if msg.Timeout > 0 && msg.Timeout < timeout {
		timeout = msg.Timeout
	}
	hctx, cancel := context.WithDeadline(ctx, polled.Add(timeout))
	defer cancel()
	return dispatch.RunHandler(hctx, h, msg)
}

// sleepCtx waits d on timer, which must be stopped, and reports false if
// ctx ended first. The timer is stopped again on return (since Go 1.23 a
// Reset after Stop never delivers a stale tick, so no draining is needed).
func sleepCtx(ctx context.Context, timer *time.Timer, d time.Duration) bool {
	timer.Reset(d)
	select {
	case <-ctx.Done():
		timer.Stop()
		return false
	case <-timer.C:
		return true
	}
}
