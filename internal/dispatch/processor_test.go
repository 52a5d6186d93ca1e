package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// recordingSink persists into a map, fails the first failures calls, and
// tracks how many Persist calls overlap.
type recordingSink struct {
	mu        sync.Mutex
	seen      map[string]int
	failures  atomic.Int32
	active    atomic.Int32
	maxActive atomic.Int32
	batches   atomic.Int32
	maxBatch  atomic.Int32
	slow      time.Duration
}

func (s *recordingSink) Persist(ctx context.Context, batch []*Completion) error {
	a := s.active.Add(1)
	defer s.active.Add(-1)
	for {
		m := s.maxActive.Load()
		if a <= m || s.maxActive.CompareAndSwap(m, a) {
			break
		}
	}
	if s.failures.Add(-1) >= 0 {
		return errors.New("database unavailable")
	}
	if s.slow > 0 {
		t := time.NewTimer(s.slow)
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.batches.Add(1)
	if n := int32(len(batch)); n > s.maxBatch.Load() {
		s.maxBatch.Store(n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range batch {
		s.seen[c.Message.EventID]++
	}
	return nil
}

func newProcessor(t *testing.T, cfg ProcessorConfig, ch chan *Completion, sink ResultSink) (*CompletionProcessor, *Metrics) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return NewCompletionProcessor(cfg, ch, sink, m, testLogger(t)), m
}

func TestProcessorPersistsEverythingAndFlushesOnClose(t *testing.T) {
	ch := make(chan *Completion, 64)
	sink := &recordingSink{seen: map[string]int{}, slow: time.Millisecond}
	sink.failures.Store(3)
	p, m := newProcessor(t, ProcessorConfig{Parallelism: 3, MaxBatch: 16, RetryInitial: time.Millisecond}, ch, sink)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	const n = 1000
	for i := range n {
		c := &Completion{Message: msg(i, "x")}
		switch i % 3 {
		case 0:
			c.Result = SuccessResult("s", nil, 0)
		case 1:
			c.Result = FailureResult("s", "e", ErrorTypeHandlerError, true, 0, nil)
		default:
			c.Result = FailureResult("s", "e", ErrorTypeHandlerPanic, false, 0, nil)
		}
		ch <- c
	}
	close(ch)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("processor did not flush")
	}
	if len(sink.seen) != n {
		t.Fatalf("persisted %d distinct, want %d", len(sink.seen), n)
	}
	if got := testutil.ToFloat64(m.SinkRetries); got != 3 {
		t.Errorf("sink retries %v, want 3", got)
	}
	if a := sink.maxActive.Load(); a > 3 || a < 1 {
		t.Errorf("max concurrent persists %d, want 1..3", a)
	}
	if b := sink.maxBatch.Load(); b > 16 {
		t.Errorf("batch of %d exceeds MaxBatch 16", b)
	}
	for o, want := range map[Outcome]float64{OutcomeSuccess: 334, OutcomeRetryableFailure: 333, OutcomePermanentFailure: 333} {
		if got := testutil.ToFloat64(m.StepsCompleted(o)); got != want {
			t.Errorf("%s = %v, want %v", o, got, want)
		}
	}
}

func TestProcessorReportsUnpersistedOnDeadline(t *testing.T) {
	ch := make(chan *Completion, 8)
	sink := &recordingSink{seen: map[string]int{}}
	sink.failures.Store(1 << 30) // never succeeds
	p, _ := newProcessor(t, ProcessorConfig{Parallelism: 1, RetryInitial: time.Millisecond, RetryMax: 2 * time.Millisecond}, ch, sink)
	for i := range 5 {
		ch <- &Completion{Message: msg(i, "x")}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := p.Run(ctx)
	if err == nil || !contains(err.Error(), "5 results not persisted") {
		t.Fatalf("want 5 unpersisted reported, got %v", err)
	}
}

// Post-handler callbacks run after the result is durable: for each persisted
// result the sink did not fence, never for a fenced one, never for a result
// that was not persisted.
func TestCallbacksRunOnlyForDurableResults(t *testing.T) {
	fired := make(chan string, 8)
	cb := CallbackFunc(func(_ context.Context, s *StepMessage, r *StepExecutionResult, svc string) {
		fired <- s.StepUUID + "/" + string(r.Outcome()) + "/" + svc
	})
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	runner := NewCallbackRunner(cb, CallbackBlocking, 0, 0, "svc", m, testLogger(t))
	var persisting sync.WaitGroup
	persisting.Add(1)
	unblock := make(chan struct{})
	sink := ResultSinkFunc(func(ctx context.Context, batch []*Completion) error {
		for _, c := range batch {
			switch c.Message.StepUUID {
			case "step-2":
				c.Fenced = true // re-claimed elsewhere: not applied
			case "step-3":
				persisting.Done()
				select { // the database never answers
				case <-unblock:
				case <-ctx.Done():
				}
				return errors.New("database unavailable")
			}
		}
		return nil
	})
	ch := make(chan *Completion, 4)
	p := NewCompletionProcessor(ProcessorConfig{Parallelism: 1, Callbacks: runner}, ch, sink, m, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for i := 1; i <= 2; i++ {
		ch <- &Completion{Message: msg(i, "x"), Result: SuccessResult(fmt.Sprintf("step-%d", i), nil, 0)}
	}
	select {
	case got := <-fired:
		if got != "step-1/success/svc" {
			t.Fatalf("callback saw %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no callback for a persisted result")
	}
	ch <- &Completion{Message: msg(3, "x"), Result: SuccessResult("step-3", nil, 0)}
	persisting.Wait()
	cancel() // the drain deadline: step-3 is abandoned, never persisted
	if err := <-done; err == nil {
		t.Fatal("Run reported nothing abandoned")
	}
	close(unblock)
	select {
	case got := <-fired:
		t.Fatalf("callback fired for a fenced or unpersisted result: %q", got)
	default:
	}
}
