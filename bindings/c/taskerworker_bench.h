/*
 * taskerworker_bench.h: the benchmark event source of libtaskerworker.so,
 * present only in a library built with -tags ffibench:
 *
 *   go build -tags ffibench -buildmode=c-shared -o libtaskerworker-bench.so ./cmd/libtaskerworker
 *
 * A real worker's events/s through the C ABI is capped by PostgreSQL (every
 * event is claimed from the queue and its result settled back into it). To
 * measure what the C ABI and the bindings cost, taskerworker_bench_start
 * runs, instead of a worker, the same FFI dispatch channel fed by a
 * generator of no-op events, with completions counted and dropped. Every
 * function of taskerworker.h (poll, complete, poll_batch, complete_batch,
 * metrics, ...) then works on it exactly as on a worker: the measured code
 * path is the product's. Events look like
 *   {"event_id":"N.1","step_uuid":"00000000-0000-4000-8000-00000000000N",
 *    "task_uuid":<same>,"handler":"noop","payload":{"n":1},"attempt":1}
 * for N = 1, 2, ...
 */
#ifndef TASKERWORKER_BENCH_H
#define TASKERWORKER_BENCH_H

#include "taskerworker.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Start the bench source with events events (<= 0: endless). Returns
 * TASKERWORKER_ERR_ALREADY_STARTED if a worker or bench source runs. */
int taskerworker_bench_start(long long events);

/* Stop the bench source (events still pending or unpolled are dropped) and
 * set *delivered to the number of completions it received (results plus any
 * ffi_timeout failures). Returns TASKERWORKER_ERR_NOT_STARTED if no bench
 * source runs (a worker started with taskerworker_start is stopped with
 * taskerworker_stop, which also stops a bench source, losing the count). */
int taskerworker_bench_stop(long long* delivered);

#ifdef __cplusplus
}
#endif

#endif /* TASKERWORKER_BENCH_H */
