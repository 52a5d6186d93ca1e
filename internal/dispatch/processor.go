package dispatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// ResultSink makes results durable (the worker's sink writes them to the
// queue and only then acknowledges the steps). Persist may be called from
// several goroutines at once and must not keep the batch slice, which is
// reused. An error means nothing in the batch may be assumed durable; the
// processor retries the whole batch, so Persist must be idempotent (the
// queue's fencing tokens make a repeated settle a no-op). On success it sets
// Fenced on every completion that did not settle its step.
type ResultSink interface {
	Persist(ctx context.Context, batch []*Completion) error
}

// ResultSinkFunc lets a plain function serve as a ResultSink.
type ResultSinkFunc func(ctx context.Context, batch []*Completion) error

// Persist calls f.
func (f ResultSinkFunc) Persist(ctx context.Context, batch []*Completion) error { return f(ctx, batch) }

// ProcessorConfig tunes a CompletionProcessor; zero values take the defaults.
type ProcessorConfig struct {
	// Parallelism is how many batches may be persisting at once (default 4;
	// upstream processed one result at a time).
	Parallelism int
	// MaxBatch caps a batch; a batch is whatever is already waiting, so at
	// low load results go out one by one without delay (default 256).
	MaxBatch int
	// RetryInitial and RetryMax bound the backoff between persist attempts
	// (defaults 10 ms and 5 s).
	RetryInitial, RetryMax time.Duration
	// Callbacks, when set, runs the post-handler callback of every result
	// once it is durable and was not fenced (see Completion.Fenced).
	Callbacks *CallbackRunner
}

// CompletionProcessor drains the completion channel into a ResultSink with
// bounded parallelism, retrying a failing sink with backoff, and, once
// results are durable, runs their post-handler callbacks and counts them by
// outcome.
type CompletionProcessor struct {
	cfg     ProcessorConfig
	in      <-chan *Completion
	sink    ResultSink
	metrics *Metrics
	log     logr.Logger
}

// NewCompletionProcessor wires a processor to the completion channel.
func NewCompletionProcessor(cfg ProcessorConfig, in <-chan *Completion, sink ResultSink, metrics *Metrics, log logr.Logger) *CompletionProcessor {
	if cfg.Parallelism <= 0 {
		cfg.Parallelism = 4
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.RetryInitial <= 0 {
		cfg.RetryInitial = 10 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Second
	}
	return &CompletionProcessor{cfg: cfg, in: in, sink: sink, metrics: metrics, log: log.WithValues("component", "completion-processor")}
}

// Run persists completions until the channel is closed and fully drained
// (the flush on shutdown), or until ctx ends. Results still unpersisted when
// ctx ends stay claimed in the queue and are redelivered; Run then returns an
// error saying how many.
func (p *CompletionProcessor) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	abandoned := 0
	for range p.cfg.Parallelism {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := p.work(ctx)
			mu.Lock()
			abandoned += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if abandoned > 0 {
		return fmt.Errorf("completion processor stopped with %d results not persisted (their steps will be redelivered): %w", abandoned, ctx.Err())
	}
	return nil
}

// work is one persisting goroutine; it returns how many results it had to
// abandon because ctx ended.
func (p *CompletionProcessor) work(ctx context.Context) int {
	batch := make([]*Completion, 0, p.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case c, ok := <-p.in: // fast path: results are waiting
			if !ok {
				return 0
			}
			batch = append(batch, c)
		default:
			select {
			case c, ok := <-p.in:
				if !ok {
					return 0
				}
				batch = append(batch, c)
			case <-ctx.Done():
				return p.drainCount()
			}
		}
	fill:
		for len(batch) < p.cfg.MaxBatch {
			select {
			case c, ok := <-p.in:
				if !ok {
					break fill
				}
				batch = append(batch, c)
			default:
				break fill
			}
		}
		if !p.persist(ctx, batch) {
			return len(batch) + p.drainCount()
		}
		if p.cfg.Callbacks != nil {
			for _, c := range batch {
				if !c.Fenced {
					p.cfg.Callbacks.Run(&c.Message, &c.Result)
				}
			}
		}
		p.count(batch)
		clear(batch) // drop references to payloads and results
	}
}

// count adds a persisted batch to tasker_steps_completed_total, one Add per
// outcome rather than one contended increment per step.
func (p *CompletionProcessor) count(batch []*Completion) {
	var n [3]int
	for _, c := range batch {
		switch c.Result.Outcome() {
		case OutcomeSuccess:
			n[0]++
		case OutcomeRetryableFailure:
			n[1]++
		default:
			n[2]++
		}
	}
	for i, o := range []Outcome{OutcomeSuccess, OutcomeRetryableFailure, OutcomePermanentFailure} {
		if n[i] > 0 {
			p.metrics.StepsCompleted(o).Add(float64(n[i]))
		}
	}
}

// persist retries the sink with capped exponential backoff and jitter until
// it succeeds or ctx ends.
func (p *CompletionProcessor) persist(ctx context.Context, batch []*Completion) bool {
	wait := p.cfg.RetryInitial
	for attempt := 1; ; attempt++ {
		err := p.sink.Persist(ctx, batch)
		if err == nil {
			return true
		}
		p.metrics.SinkRetries.Inc()
		p.log.Error(err, "persisting step results failed; retrying", "batch", len(batch), "attempt", attempt, "backoff", wait)
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
		wait = min(2*wait, p.cfg.RetryMax)
	}
}

// drainCount counts what is left in the channel once ctx has ended, for the
// abandoned figure.
func (p *CompletionProcessor) drainCount() int {
	n := 0
	for {
		select {
		case _, ok := <-p.in:
			if !ok {
				return n
			}
			n++
		default:
			return n
		}
	}
}
