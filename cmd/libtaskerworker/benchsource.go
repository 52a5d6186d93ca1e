//go:build ffibench

// Benchmark event source, compiled only with -tags ffibench: the product
// library never contains it.
//
// Why it exists: a real worker's events/s through the C ABI is capped by
// PostgreSQL, since every event is claimed from the queue and its result
// settled back into it. That cap hides what the C ABI and the language
// bindings themselves cost. taskerworker_bench_start runs, instead of a
// worker, an instance whose FFI dispatch channel is fed by a generator of
// no-op events and whose completions are counted and dropped. It is the same
// instance type stored in the same `running` global that taskerworker_poll,
// taskerworker_complete, taskerworker_poll_batch and
// taskerworker_complete_batch use, so a binding measured against it runs
// exactly the product's code path from the C call down to the completion
// channel; only the queue behind the channel is missing.
//
// Declared in bindings/c/taskerworker_bench.h:
//
//	int taskerworker_bench_start(long long events); // events <= 0: endless
//	int taskerworker_bench_stop(long long* delivered);
//
// taskerworker_stop also stops a bench instance (the delivered count is then
// not reported).
package main

import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/ffi"
)

// benchChannelCapacity is the dispatch and completion channels' capacity.
const benchChannelCapacity = 4096

// benchState is the running bench source's bookkeeping, guarded by
// lifecycle; inst is the instance it runs.
type benchState struct {
	inst      *instance
	delivered atomic.Int64
}

var bench *benchState

//export taskerworker_bench_start
func taskerworker_bench_start(events C.longlong) (code C.int) {
	defer guard(&code)
	return fail(benchStart(int64(events)))
}

//export taskerworker_bench_stop
func taskerworker_bench_stop(delivered *C.longlong) (code C.int) {
	defer guard(&code)
	if delivered == nil {
		return fail(errNull("delivered"))
	}
	n, err := benchStop()
	*delivered = C.longlong(n)
	return fail(err)
}

// benchStart starts the bench source: events no-op events (endless when
// events <= 0) through a fresh FFI channel.
func benchStart(events int64) error {
	lifecycle.Lock()
	defer lifecycle.Unlock()
	if running.Load() != nil {
		return newError(codeAlreadyStarted, "a worker is already running in this process: call taskerworker_stop first")
	}
	m, err := dispatch.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		return internalError("bench metrics: " + err.Error())
	}
	dispatchCh := make(chan dispatch.StepMessage, benchChannelCapacity)
	completion := make(chan *dispatch.Completion, benchChannelCapacity)
	ch := ffi.New(ffi.Config{WorkerID: "bench"}, dispatchCh, completion, m, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	st := &benchState{}
	inst := &instance{ch: ch, cancel: cancel, done: make(chan struct{})}
	st.inst = inst

	var producers sync.WaitGroup
	producers.Add(2)
	go func() { // the generator
		defer producers.Done()
		payload := json.RawMessage(`{"n":1}`)
		for n := int64(1); events <= 0 || n <= events; n++ {
			uuid := fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
			msg := dispatch.StepMessage{
				EventID: fmt.Sprintf("%d.1", n), StepUUID: uuid, TaskUUID: uuid, Handler: "noop",
				Payload: payload, Attempt: 1, Receipt: dispatch.Receipt{ID: n, Token: 1},
			}
			select {
			case dispatchCh <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { // the sweeper, as the worker runs it
		defer producers.Done()
		ch.Run(ctx)
	}()
	drained := make(chan struct{})
	go func() { // the completion processor, minus the database
		for range completion {
			st.delivered.Add(1)
		}
		close(drained)
	}()
	go func() { // stop: what the worker's drain does, without waiting
		<-ctx.Done()
		producers.Wait()
		ch.Stop() // pending events are dropped: there is no queue to return them to
		ch.WaitDeliveries()
		close(completion)
		<-drained
		close(inst.done)
	}()
	bench = st
	running.Store(inst)
	return nil
}

// benchStop stops the bench source and reports how many completions it
// delivered (results and ffi_timeout failures).
func benchStop() (int64, error) {
	lifecycle.Lock()
	defer lifecycle.Unlock()
	inst := running.Load()
	switch {
	case inst == nil:
		return 0, errNotStarted
	case bench == nil || bench.inst != inst:
		return 0, newError(codeNotStarted, "the running instance is a worker, not the bench source: call taskerworker_stop")
	}
	st := bench
	// inst.done is closed once every delivery was counted.
	if err := stopLocked(inst, 0); err != nil {
		return st.delivered.Load(), err
	}
	bench = nil
	return st.delivered.Load(), nil
}
