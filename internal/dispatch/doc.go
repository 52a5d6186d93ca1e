// Package dispatch is the dispatch core every Tasker worker runs: it takes step
// messages from a bounded dispatch channel, runs their handlers with bounded
// concurrency, and hands every outcome — success or an explicit failure — to a
// bounded completion channel that a CompletionProcessor drains into durable
// storage.
//
// It implements the four mitigations of the TAS-67 risk plan:
//
//   - Risk 1: a step that cannot get a concurrency permit becomes a retryable
//     semaphore_acquisition_failed result instead of vanishing.
//   - Risk 3: a handler's permit is released before its result is sent, so a
//     full completion channel never starves dispatch.
//   - Risk 4: post-handler callbacks run under a strategy (Blocking,
//     BlockingWithTimeout, FireAndForget) that bounds how long a caller waits.
//   - Channel saturation of both channels is measured and exported.
//
// Beyond upstream Tasker, the permit is taken before a handler goroutine
// starts (so the dispatch buffer is real backpressure), a per-step timeout is
// honoured, and shutdown hands back every message that never started so the
// caller can return it to its queue: nothing is dropped.
package dispatch
