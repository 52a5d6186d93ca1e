// Command libtaskerworker is built with -buildmode=c-shared into
// libtaskerworker.so: the C ABI (taskerworker.h) through which foreign step
// handlers run inside a Tasker worker. Every exported function recovers from
// panics and reports errors as codes plus a per-thread message, so misuse
// from a foreign runtime never crashes the process.
package main

/*
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "taskerworker.h"

// The last error lives in C thread-local storage: a call from C runs Go on
// the calling thread, so this is exactly "the calling thread's last error",
// and the key's destructor frees it when the thread exits.
static pthread_key_t tw_err_key;
static pthread_once_t tw_err_once = PTHREAD_ONCE_INIT;
static void tw_err_init(void) { pthread_key_create(&tw_err_key, free); }

static void tw_set_error(char* msg) {
	pthread_once(&tw_err_once, tw_err_init);
	char* old = pthread_getspecific(tw_err_key);
	if (old != NULL) free(old);
	pthread_setspecific(tw_err_key, msg);
}

static char* tw_copy_error(void) {
	pthread_once(&tw_err_once, tw_err_init);
	char* msg = pthread_getspecific(tw_err_key);
	return msg == NULL ? NULL : strdup(msg);
}
*/
import "C"

import (
	"encoding/json"
	"unsafe"

	"github.com/seed-a17b38e7/workerpool-operator/internal/ffi"
)

func main() {} // required by -buildmode=c-shared

//export taskerworker_start
func taskerworker_start(config *C.char, databaseURL *C.char) (code C.int) {
	defer guard(&code)
	cfgText, err := optionalString(config, "config")
	if err != nil {
		return fail(err)
	}
	dsn, err := optionalString(databaseURL, "database_url")
	if err != nil {
		return fail(err)
	}
	return fail(start(cfgText, dsn))
}

//export taskerworker_stop
func taskerworker_stop(timeoutMs C.int) (code C.int) {
	defer guard(&code)
	return fail(stop(int(timeoutMs)))
}

//export taskerworker_poll
func taskerworker_poll(out **C.char) (code C.int) {
	defer guard(&code)
	if out == nil {
		return fail(errNull("event_json"))
	}
	*out = nil
	inst, err := current()
	if err != nil {
		return fail(err)
	}
	msg, ok := inst.ch.Poll()
	if !ok {
		if inst.stopping.Load() {
			return fail(errStopped)
		}
		ok0()
		return C.TASKERWORKER_NO_EVENT
	}
	b, err := ffi.AppendEvent(nil, &msg)
	if err != nil {
		// Only for a payload that is not JSON, which the queue's jsonb
		// column cannot hold; the event stays pending and times out into a
		// retry rather than being lost.
		return fail(internalError("encode event: " + err.Error()))
	}
	*out = cBytes(b)
	return fail(nil)
}

//export taskerworker_complete
func taskerworker_complete(eventID *C.char, resultJSON *C.char) (code C.int) {
	defer guard(&code)
	id, err := requiredString(eventID, "event_id")
	if err != nil {
		return fail(err)
	}
	if resultJSON == nil {
		return fail(errNull("result_json"))
	}
	inst, err := current()
	if err != nil {
		return fail(err)
	}
	data, err := goBytes(resultJSON, ffi.MaxResultSize, "result_json")
	if err != nil {
		return fail(err)
	}
	return fail(complete(inst, id, data))
}

//export taskerworker_poll_batch
func taskerworker_poll_batch(maxEvents C.int, out **C.char) (code C.int) {
	defer guard(&code)
	if out == nil {
		return fail(errNull("events_json"))
	}
	*out = nil
	b, n, err := pollBatch(running.Load(), int(maxEvents))
	if err != nil {
		return fail(err)
	}
	if n == 0 {
		ok0()
		return C.TASKERWORKER_NO_EVENT
	}
	*out = cBytes(b)
	return fail(nil)
}

//export taskerworker_complete_batch
func taskerworker_complete_batch(eventIDs *C.char, resultsJSON *C.char, outcomes **C.char) (code C.int) {
	defer guard(&code)
	switch {
	case eventIDs == nil:
		return fail(errNull("event_ids"))
	case resultsJSON == nil:
		return fail(errNull("results_json"))
	case outcomes == nil:
		return fail(errNull("outcomes_json"))
	}
	*outcomes = nil
	// One copy of each string into Go memory: the results handed on (and
	// possibly retained by a decoded result) never alias the caller's.
	results, err := goBytes(resultsJSON, 4*ffi.MaxResultSize, "results_json")
	if err != nil {
		return fail(err)
	}
	out, err := completeBatch(running.Load(), C.GoString(eventIDs), results)
	if out != nil {
		*outcomes = cBytes(out)
	}
	return fail(err)
}

//export taskerworker_metrics
func taskerworker_metrics(out **C.char) (code C.int) {
	defer guard(&code)
	if out == nil {
		return fail(errNull("metrics_json"))
	}
	*out = nil
	inst, err := current()
	if err != nil {
		return fail(err)
	}
	m := inst.ch.Metrics()
	b, _ := json.Marshal(&m)
	*out = C.CString(string(b))
	return fail(nil)
}

//export taskerworker_check_starvation
func taskerworker_check_starvation(out **C.char) (code C.int) {
	defer guard(&code)
	if out == nil {
		return fail(errNull("starving_json"))
	}
	*out = nil
	inst, err := current()
	if err != nil {
		return fail(err)
	}
	s := inst.ch.CheckStarvationWarnings()
	if s == nil {
		s = emptyStarving
	}
	b, _ := json.Marshal(s)
	*out = C.CString(string(b))
	return fail(nil)
}

//export taskerworker_cleanup_timeouts
func taskerworker_cleanup_timeouts(count *C.int) (code C.int) {
	defer guard(&code)
	if count == nil {
		return fail(errNull("count"))
	}
	inst, err := current()
	if err != nil {
		return fail(err)
	}
	*count = C.int(inst.ch.CleanupTimeouts())
	return fail(nil)
}

//export taskerworker_last_error
func taskerworker_last_error() *C.char { return C.tw_copy_error() }

//export taskerworker_version
func taskerworker_version() *C.char { return C.CString(version()) }

//export taskerworker_free
func taskerworker_free(s *C.char) {
	if s != nil {
		C.free(unsafe.Pointer(s))
	}
}

// fail records err for the calling thread and returns its code.
func fail(err error) C.int {
	if msg, ok := errorMessage(err); ok {
		C.tw_set_error(C.CString(msg))
	} else {
		C.tw_set_error(nil)
	}
	return C.int(codeOf(err))
}

// ok0 clears the calling thread's last error.
func ok0() { C.tw_set_error(nil) }

// guard turns a panic into TASKERWORKER_ERR_INTERNAL: a Go panic must never
// unwind into a foreign runtime.
func guard(code *C.int) {
	if p := recover(); p != nil {
		*code = fail(internalError(panicText(p)))
	}
}

func optionalString(p *C.char, name string) (string, error) {
	if p == nil {
		return "", nil
	}
	return checkUTF8(C.GoString(p), name)
}

// goBytes copies the NUL-terminated p into Go memory, refusing (without
// copying) one longer than limit.
func goBytes(p *C.char, limit int, name string) ([]byte, error) {
	n := C.strlen(p)
	if uint64(n) > uint64(limit) {
		return nil, newError(codeInvalidJSON, "%s: %d bytes, the limit is %d", name, uint64(n), limit)
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n)), nil
}

// cBytes returns b as a NUL-terminated C string (malloc'd, for
// taskerworker_free), copying it once.
func cBytes(b []byte) *C.char {
	p := C.malloc(C.size_t(len(b) + 1))
	dst := unsafe.Slice((*byte)(p), len(b)+1)
	copy(dst, b)
	dst[len(b)] = 0
	return (*C.char)(p)
}

func requiredString(p *C.char, name string) (string, error) {
	if p == nil {
		return "", errNull(name)
	}
	return checkUTF8(C.GoString(p), name)
}
