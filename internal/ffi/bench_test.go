package ffi_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/ffi"
)

// BenchmarkPollComplete is the Go-native baseline of the FFI round trip: one
// goroutine polls an event from a backlogged dispatch channel and completes
// it, as a foreign poller does through the C ABI, while another goroutine
// drains the completion channel (the completion processor's place). The
// dispatch channel is refilled with the timer stopped, so only Poll and
// Complete are measured. Besides ns/op (the mean) it reports the p50 round
// trip and events/s.
//
//   - struct: Poll + Complete with a result struct (the channel alone).
//   - json: also what the C ABI adds around the channel, minus cgo: the event
//     is marshalled to JSON and the result decoded from JSON (DecodeResult).
//
// docs/benchmarks.md ("FFI round trip") compares the cgo and Python paths
// against these.
func BenchmarkPollComplete(b *testing.B) {
	for _, mode := range []string{"struct", "json"} {
		b.Run(mode, func(b *testing.B) { benchPollComplete(b, mode == "json") })
	}
}

func benchPollComplete(b *testing.B, viaJSON bool) {
	const chunk = 4096
	dispatchCh := make(chan dispatch.StepMessage, chunk)
	completion := make(chan *dispatch.Completion, 1000)
	m, err := dispatch.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	ch := ffi.New(ffi.Config{WorkerID: "bench"}, dispatchCh, completion, m, logr.Discard())
	drained := make(chan struct{})
	go func() {
		for range completion {
		}
		close(drained)
	}()
	payload := json.RawMessage(`{"n":1}`)
	msgs := make([]dispatch.StepMessage, chunk)
	results := make([][]byte, chunk)
	samples := make([]time.Duration, 0, b.N) // per round trip, for the p50
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(chunk, b.N-done)
		b.StopTimer()
		for i := range n {
			id := done + i
			step := fmt.Sprintf("00000000-0000-4000-8000-%012d", id)
			msgs[i] = dispatch.StepMessage{EventID: fmt.Sprintf("%d.1", id), StepUUID: step, TaskUUID: step,
				Handler: "noop", Payload: payload, Attempt: 1, Receipt: dispatch.Receipt{ID: int64(id), Token: 1}}
			dispatchCh <- msgs[i]
			results[i] = []byte(`{"step_uuid":"` + step + `","success":true,"result":null,"status":"completed","metadata":{"execution_time_ms":0,"retryable":false}}`)
		}
		b.StartTimer()
		for i := range n {
			t0 := time.Now()
			msg, ok := ch.Poll()
			if !ok {
				b.Fatal("poll found nothing in a backlogged channel")
			}
			var res dispatch.StepExecutionResult
			if viaJSON {
				if _, err := json.Marshal(&msg); err != nil {
					b.Fatal(err)
				}
				if res, err = ffi.DecodeResult(results[i]); err != nil {
					b.Fatal(err)
				}
			} else {
				res = dispatch.StepExecutionResult{StepUUID: msg.StepUUID, Success: true}
			}
			if st, err := ch.Complete(msg.EventID, res); st != ffi.Completed {
				b.Fatalf("complete: %v %v", st, err)
			}
			samples = append(samples, time.Since(t0))
		}
		done += n
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2])/1e3, "p50-µs")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	ch.Stop()
	close(completion)
	<-drained
}
