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
	b, err := json.Marshal(&msg)
	if err != nil {
		// Cannot happen for a StepMessage; the event stays pending and
		// times out into a retry rather than being lost.
		return fail(internalError("encode event: " + err.Error()))
	}
	*out = C.CString(string(b))
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
	return fail(complete(inst, id, C.GoString(resultJSON)))
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

func requiredString(p *C.char, name string) (string, error) {
	if p == nil {
		return "", errNull(name)
	}
	return checkUTF8(C.GoString(p), name)
}
