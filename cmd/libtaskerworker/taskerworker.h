/*
 * taskerworker.h: the C ABI of libtaskerworker.so, through which step
 * handlers written in other languages (Python, Ruby, ...) run inside a Tasker
 * worker. The library runs the whole worker (PostgreSQL queue, metrics
 * server, FFI dispatch channel); foreign threads poll it for step events and
 * complete them with results.
 *
 * Rules:
 *  - Strings in and out are UTF-8 JSON (or plain text for config, ids and
 *    errors), NUL-terminated.
 *  - Every string the library returns (through an out-parameter or as a
 *    return value) must be released with taskerworker_free, and nothing else.
 *  - Every function returns a status code below; on a negative code (and on
 *    RETRY_LATER and PARTIAL), taskerworker_last_error() describes it for
 *    the calling thread.
 *  - All functions are safe to call from many threads at once. None of them
 *    holds a global lock while it waits.
 *  - Misuse (NULL pointers, invalid UTF-8 or JSON, unknown or repeated event
 *    ids, calls before start or after stop) returns an error code; it never
 *    crashes the process and never loses a step.
 */
#ifndef TASKERWORKER_H
#define TASKERWORKER_H

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. Non-negative codes are successes. */
#define TASKERWORKER_OK 0                   /* done */
#define TASKERWORKER_NO_EVENT 1             /* poll: nothing to do right now */
#define TASKERWORKER_RETRY_LATER 2          /* complete: completion channel full; the event stays pending, call again */
#define TASKERWORKER_PARTIAL 3              /* complete_batch: not every event was completed; *outcomes_json says which */
#define TASKERWORKER_ERR_NULL_ARGUMENT (-1) /* a required pointer was NULL */
#define TASKERWORKER_ERR_INVALID_UTF8 (-2)  /* a string argument was not UTF-8 */
#define TASKERWORKER_ERR_INVALID_JSON (-3)  /* the result was not valid JSON in the result format */
#define TASKERWORKER_ERR_NOT_STARTED (-4)   /* no worker running: call taskerworker_start first */
#define TASKERWORKER_ERR_ALREADY_STARTED (-5)
#define TASKERWORKER_ERR_CONFIG (-6)        /* the configuration was refused; the message names the key */
#define TASKERWORKER_ERR_DATABASE (-7)      /* the queue database could not be reached or migrated */
#define TASKERWORKER_ERR_UNKNOWN_EVENT (-8) /* complete: no such event id */
#define TASKERWORKER_ERR_ALREADY_COMPLETED (-9)
#define TASKERWORKER_ERR_TIMED_OUT (-10)    /* complete: the event already became an ffi_timeout failure */
#define TASKERWORKER_ERR_STEP_MISMATCH (-11) /* complete: result step_uuid is not the event's step */
#define TASKERWORKER_ERR_INVALID_RESULT (-12) /* complete: result JSON is well-formed but inconsistent */
#define TASKERWORKER_ERR_BUSY (-13)         /* complete: another completion of this event is in progress */
#define TASKERWORKER_ERR_STOPPED (-14)      /* the worker is stopping; the step goes back to the queue */
#define TASKERWORKER_ERR_DRAIN (-15)        /* stop: the drain left work behind (it will be redelivered) */
#define TASKERWORKER_ERR_INVALID_ARGUMENT (-16) /* a number or batch size is out of range, or a batch's ids and results do not pair up; the message says which */
#define TASKERWORKER_ERR_INTERNAL (-99)     /* a bug: the message says what happened */

/* Start a worker. config is worker.toml text (recognised by a newline or an
 * "=") or else a path to such a file (NULL: $TASKER_CONFIG_PATH or the
 * defaults). database_url is the queue's
 * PostgreSQL URL (NULL: $DATABASE_URL). The FFI dispatch channel is always
 * enabled. Applies the queue schema, starts the metrics server. */
int taskerworker_start(char* config, char* database_url);

/* Stop the worker: stop claiming, return unpolled steps to the queue (their
 * attempt given back), wait for pending events to be completed, flush
 * results; all within timeout_ms (<= 0: the configured drain timeout). A
 * polled event still pending then is retried later as ffi_abandoned, its
 * attempt counted. */
int taskerworker_stop(int timeout_ms);

/* Take the next step event without blocking. On TASKERWORKER_OK *event_json
 * is {"event_id","step_uuid","task_uuid","handler","payload","attempt"},
 * plus "correlation_id" and "timeout_ms" when the step has them; on
 * TASKERWORKER_NO_EVENT it is NULL. */
int taskerworker_poll(char** event_json);

/* Complete a polled event with a result {"step_uuid","success","result",
 * "status","metadata":{...},"error":{"message","error_type","retryable",
 * "backtrace"}}. */
int taskerworker_complete(char* event_id, char* result_json);

/* Take up to max (1..4096) step events without blocking, in one call. On
 * TASKERWORKER_OK *events_json is a JSON array of 1..max events, each as
 * taskerworker_poll gives it, oldest first; on TASKERWORKER_NO_EVENT it is
 * NULL. Every returned event is pending until completed, exactly as if it had
 * been polled alone: poll no more than you can run before the starvation
 * threshold. */
int taskerworker_poll_batch(int max, char** events_json);

/* Complete several polled events in one call. event_ids holds the event ids
 * separated by '\n' (no trailing newline needed); results_json is a JSON
 * array holding one result per id, in the same order. Each completion is
 * independent and behaves as taskerworker_complete would for it.
 *  - TASKERWORKER_OK: every event was completed; *outcomes_json is NULL.
 *  - TASKERWORKER_PARTIAL: at least one was not; *outcomes_json is a JSON
 *    array with one entry per event, in order: {"code":0} for a completed
 *    one, {"code":N,"error":"..."} for one that was not (N as
 *    taskerworker_complete would have returned: RETRY_LATER means send that
 *    one again; the event stays pending). An empty id is refused as
 *    TASKERWORKER_ERR_UNKNOWN_EVENT. Once one event is answered RETRY_LATER
 *    (the completion channel stayed full for the send timeout), the events
 *    after it are not attempted and are answered RETRY_LATER too, so the
 *    call waits at most one send timeout.
 *  - a negative code: nothing was completed (NULL pointer, event_ids not
 *    UTF-8, results_json not a JSON array, ids and results of different
 *    counts or more than 4096 of them, not started); *outcomes_json is NULL.
 * event_ids "" with results_json "[]" is an empty batch: TASKERWORKER_OK. */
int taskerworker_complete_batch(char* event_ids, char* results_json, char** outcomes_json);

/* FFI channel metrics as JSON: pending_count, oldest_pending_age_ms and
 * newest_pending_age_ms (null when nothing is pending), oldest_event_id
 * (absent when nothing is pending), starvation_detected,
 * starving_event_count; unpolled_count and oldest_unpolled_age_ms (null when
 * none) for events waiting to be polled, last_poll_age_ms, poller_stalled
 * (events wait and no poll for longer than the starvation threshold). Also
 * exported on /metrics. */
int taskerworker_metrics(char** metrics_json);

/* Log a warning per pending event older than the starvation threshold and
 * return them as a JSON array of {"event_id","step_uuid","age_ms"}. The
 * worker also checks by itself; this is for parity with upstream pollers. */
int taskerworker_check_starvation(char** starving_json);

/* Turn pending events older than the completion timeout into ffi_timeout
 * failures now; *count receives how many. The worker also sweeps by itself. */
int taskerworker_cleanup_timeouts(int* count);

/* The calling thread's last error message, or NULL if its last call
 * succeeded outright (OK, NO_EVENT). Free it with taskerworker_free. */
char* taskerworker_last_error(void);

/* The library version. Free it with taskerworker_free. */
char* taskerworker_version(void);

/* Release a string returned by this library. NULL is ignored. */
void taskerworker_free(char* s);

#ifdef __cplusplus
}
#endif

#endif /* TASKERWORKER_H */
