// Package ffi is the FFI dispatch channel: the consumer of the dispatch
// channel when a pool's step handlers are written in another language
// (Python, Ruby) and reach the worker through the C ABI. Foreign threads
// Poll for step events and Complete them with a result; the channel keeps
// each polled event pending until then.
//
// It fixes what upstream Tasker's FfiDispatchChannel left open:
//
//   - Complete never holds a lock another caller needs while it waits for
//     room in the completion channel, and a completion that cannot be
//     delivered in time is not lost: the caller is told to retry and the
//     event stays pending.
//   - Timeouts are swept and starvation is checked by the channel itself on a
//     ticker (upstream left both to the foreign side, and Ruby never swept);
//     an ffi_timeout failure is delivered with the same no-loss guarantee.
//   - The post-handler callback runs under the configured strategy, so it can
//     never block a foreign thread beyond the callback timeout (seed risk 4).
//   - Every [worker.mpsc_channels.ffi_dispatch] key is honoured.
package ffi
