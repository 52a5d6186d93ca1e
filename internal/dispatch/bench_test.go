package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// The benchmarks below push b.N steps with a no-op handler through
// producer → dispatch channel (1000) → bounded handlers → completion channel
// (1000) → consumer. BenchmarkBarePipeline is the same shape built from plain
// channels and goroutines; it is the baseline BenchmarkDispatch is judged
// against (goal: >= 0.7x its steps/s). See docs/benchmarks.md.

var benchConcurrency = []int{1, 16, 256}

const benchBuffer = 1000

func BenchmarkDispatch(b *testing.B) {
	for _, n := range benchConcurrency {
		b.Run(fmt.Sprintf("concurrency=%d", n), func(b *testing.B) { benchDispatch(b, n, nil) })
	}
}

// BenchmarkDispatchWithCallback adds a FireAndForget post-handler callback,
// which costs a goroutine per step.
func BenchmarkDispatchWithCallback(b *testing.B) {
	cb := CallbackFunc(func(context.Context, *StepMessage, *StepExecutionResult, string) {})
	for _, n := range benchConcurrency {
		b.Run(fmt.Sprintf("concurrency=%d", n), func(b *testing.B) { benchDispatch(b, n, cb) })
	}
}

func benchDispatch(b *testing.B, concurrency int, cb PostHandlerCallback) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	r := NewRegistry()
	r.MustRegister("noop", HandlerFunc(func(context.Context, *StepMessage) (json.RawMessage, error) { return nil, nil }))
	dispatch := make(chan StepMessage, benchBuffer)
	completion := make(chan *Completion, benchBuffer)
	log := logr.Discard()
	mon := NewChannelMonitor("completion", func() int { return len(completion) }, benchBuffer, 0, 0, log)
	monCtx, stopMon := context.WithCancel(context.Background())
	defer stopMon()
	go mon.Watch(monCtx, 0)
	svc := NewHandlerDispatchService(ServiceConfig{MaxConcurrentHandlers: concurrency}, r, dispatch, completion, m, log)
	if err := svc.RegisterMetrics(reg); err != nil {
		b.Fatal(err)
	}
	checker := NewCapacityChecker(svc.Semaphore(), 0, 100, log)
	var persisted sync.WaitGroup
	persisted.Add(b.N)
	sink := ResultSinkFunc(func(_ context.Context, batch []*Completion) error {
		persisted.Add(-len(batch))
		return nil
	})
	proc := NewCompletionProcessor(ProcessorConfig{Callbacks: NewCallbackRunner(cb, "", 0, 0, DefaultServiceID, m, log)}, completion, sink, m, log)
	go func() { _ = svc.Run(context.Background()) }()
	procDone := make(chan struct{})
	go func() { _ = proc.Run(context.Background()); close(procDone) }()
	m0 := StepMessage{EventID: "e", StepUUID: "s", TaskUUID: "t", Handler: "noop", Attempt: 1}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		checker.CanAccept()
		dispatch <- m0
	}
	persisted.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "steps/s")
	b.StopTimer()
	if _, err := svc.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
	svc.Wait()
	close(completion)
	<-procDone
}

func BenchmarkBarePipeline(b *testing.B) {
	for _, n := range benchConcurrency {
		b.Run(fmt.Sprintf("concurrency=%d", n), func(b *testing.B) {
			dispatch := make(chan StepMessage, benchBuffer)
			completion := make(chan *Completion, benchBuffer)
			sem := make(chan struct{}, n)
			handler := func(*StepMessage) []byte { return nil }
			go func() {
				for m := range dispatch {
					sem <- struct{}{}
					go func() {
						out := handler(&m)
						<-sem
						completion <- &Completion{Message: m, Result: StepExecutionResult{StepUUID: m.StepUUID, Success: true, Result: out}}
					}()
				}
			}()
			done := make(chan struct{})
			go func() {
				for range b.N {
					<-completion
				}
				close(done)
			}()
			m0 := StepMessage{EventID: "e", StepUUID: "s", TaskUUID: "t", Handler: "noop", Attempt: 1}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				dispatch <- m0
			}
			<-done
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "steps/s")
			b.StopTimer()
			close(dispatch)
		})
	}
}
