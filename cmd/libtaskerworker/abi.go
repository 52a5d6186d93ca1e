package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
	"github.com/seed-a17b38e7/workerpool-operator/internal/ffi"
	"github.com/seed-a17b38e7/workerpool-operator/internal/worker"
	"github.com/seed-a17b38e7/workerpool-operator/pkg/taskerworker"
)

// Status codes, mirroring taskerworker.h (kept in Go so the logic below is
// testable without cgo).
const (
	codeOK               = 0
	codeNoEvent          = 1
	codeRetryLater       = 2
	codePartial          = 3
	codeNullArgument     = -1
	codeInvalidUTF8      = -2
	codeInvalidJSON      = -3
	codeNotStarted       = -4
	codeAlreadyStarted   = -5
	codeConfig           = -6
	codeDatabase         = -7
	codeUnknownEvent     = -8
	codeAlreadyCompleted = -9
	codeTimedOut         = -10
	codeStepMismatch     = -11
	codeInvalidResult    = -12
	codeBusy             = -13
	codeStopped          = -14
	codeDrain            = -15
	codeInvalidArgument  = -16
	codeInternal         = -99
)

// abiError carries a status code with its message.
type abiError struct {
	code int
	msg  string
}

// Error returns the message taskerworker_last_error reports.
func (e *abiError) Error() string { return e.msg }

func newError(code int, format string, args ...any) error {
	return &abiError{code: code, msg: fmt.Sprintf(format, args...)}
}

var (
	errStopped    = newError(codeStopped, "the worker is stopping: no new events; pending ones go back to the queue")
	errNotStarted = newError(codeNotStarted, "no worker is running: call taskerworker_start first")
	emptyStarving = []ffi.StarvingEvent{}
)

// retryLater is the non-error answer RETRY_LATER, still with a message.
var retryLater = &abiError{code: codeRetryLater, msg: "completion channel full: the event stays pending; call taskerworker_complete again"}

func errNull(name string) error {
	return newError(codeNullArgument, "%s is NULL", name)
}

func internalError(msg string) error { return newError(codeInternal, "internal error: %s", msg) }

func panicText(p any) string { return fmt.Sprint("panic: ", p) }

func checkUTF8(s, name string) (string, error) {
	if !utf8.ValidString(s) {
		return "", newError(codeInvalidUTF8, "%s is not valid UTF-8", name)
	}
	return s, nil
}

func codeOf(err error) int {
	if err == nil {
		return codeOK
	}
	var e *abiError
	if errors.As(err, &e) {
		return e.code
	}
	return codeInternal
}

// errorMessage is what taskerworker_last_error reports for err on the
// calling thread: nothing for a plain success, a message for an error and
// for the non-negative answers that still need explaining (RETRY_LATER,
// PARTIAL).
func errorMessage(err error) (string, bool) {
	if err == nil {
		return "", false
	}
	if c := codeOf(err); c >= 0 && c != codeRetryLater && c != codePartial {
		return "", false
	}
	return err.Error(), true
}

func version() string { return taskerworker.Version }

// instance is a running worker. Calls load it atomically and never hold a
// lock while they work, so a slow Complete never blocks other threads.
type instance struct {
	// w is the worker; nil for the benchmark event source (benchsource.go,
	// build tag ffibench), which runs only ch and closes done when stopped.
	w        *worker.Worker
	ch       *ffi.Channel
	cancel   context.CancelFunc
	done     chan struct{}
	runErr   error
	stopping atomic.Bool
	drain    time.Duration
}

var (
	running   atomic.Pointer[instance]
	lifecycle sync.Mutex // serialises start and stop only
)

func current() (*instance, error) {
	inst := running.Load()
	if inst == nil {
		return nil, errNotStarted
	}
	return inst, nil
}

// loadConfig accepts worker.toml text or a path; empty means the
// environment's config or the defaults. Text is recognised by a newline or
// an "=" (any TOML that sets a key has one); anything else is a path, so a
// mistyped path gets "no such file" rather than a TOML syntax error.
func loadConfig(text string) (config.Config, error) {
	var cfg config.Config
	var err error
	switch {
	case text == "":
		cfg, _, err = config.FromEnv()
	case !strings.ContainsAny(text, "\n="):
		if cfg, err = config.Load(text); err == nil {
			err = cfg.FillWorkerID()
		}
	default:
		if cfg, err = config.Parse([]byte(text)); err == nil {
			err = cfg.FillWorkerID()
		}
	}
	if err != nil {
		return config.Config{}, newError(codeConfig, "config: %v", err)
	}
	cfg.Worker.MPSCChannels.FFIDispatch.Enabled = true
	return cfg, nil
}

func logger() logr.Logger {
	lvl := zapcore.InfoLevel
	if v := os.Getenv("TASKER_LOG_LEVEL"); v != "" {
		_ = lvl.Set(v)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return zapr.NewLogger(zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(os.Stderr), lvl))).WithName("libtaskerworker")
}

func start(cfgText, dsn string) error {
	lifecycle.Lock()
	defer lifecycle.Unlock()
	if running.Load() != nil {
		return newError(codeAlreadyStarted, "a worker is already running in this process: call taskerworker_stop first")
	}
	cfg, err := loadConfig(cfgText)
	if err != nil {
		return err
	}
	if dsn == "" {
		dsn = os.Getenv(config.EnvDatabaseURL)
	}
	if dsn == "" {
		return newError(codeConfig, "no database: pass database_url or set %s", config.EnvDatabaseURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := worker.New(ctx, worker.Options{Config: cfg, DatabaseURL: dsn, Logger: logger(), Version: version(), Migrate: true})
	if err != nil {
		code := codeDatabase
		if strings.Contains(err.Error(), "config") || strings.Contains(err.Error(), "listen") {
			code = codeConfig
		}
		return newError(code, "start worker: %v", err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	inst := &instance{w: w, ch: w.FFI(), cancel: stopRun, done: make(chan struct{}), drain: cfg.Worker.Drain.Timeout()}
	go func() {
		inst.runErr = w.Run(runCtx)
		close(inst.done)
	}()
	running.Store(inst)
	return nil
}

func stop(timeoutMs int) error {
	lifecycle.Lock()
	defer lifecycle.Unlock()
	inst := running.Load()
	if inst == nil {
		return errNotStarted
	}
	return stopLocked(inst, timeoutMs)
}

// stopLocked stops inst, the running instance; lifecycle is held.
func stopLocked(inst *instance, timeoutMs int) error {
	drain := inst.drain
	if timeoutMs > 0 {
		drain = time.Duration(timeoutMs) * time.Millisecond
		if inst.w != nil { // nil for the ffibench event source
			inst.w.SetDrainTimeout(drain)
		}
	}
	inst.stopping.Store(true)
	inst.cancel()
	// The drain itself is bounded by drain; the margin covers flushing
	// results and returning steps to the queue.
	wait := drain + 30*time.Second
	select {
	case <-inst.done:
	case <-time.After(wait):
		return newError(codeDrain, "worker did not stop within %v; unsettled steps will be redelivered", wait)
	}
	running.Store(nil)
	if inst.runErr != nil {
		return newError(codeDrain, "drain: %v", inst.runErr)
	}
	return nil
}

// complete delivers one result (taskerworker_complete).
func complete(inst *instance, eventID string, resultJSON []byte) error {
	return completeOne(inst, eventID, resultJSON, -1)
}

// completeOne decodes and delivers one result: item is its index in a
// batch, or -1 for a single complete, and names it in messages
// ("results_json[3]", "result_json"); the name is built only for an error.
func completeOne(inst *instance, eventID string, resultJSON []byte, item int) error {
	res, err := ffi.DecodeResult(resultJSON)
	if err != nil {
		what := "result_json"
		if item >= 0 {
			what = "results_json[" + strconv.Itoa(item) + "]"
		}
		switch {
		case errors.Is(err, ffi.ErrInvalidUTF8):
			return newError(codeInvalidUTF8, "%s: %v", what, err)
		case errors.Is(err, ffi.ErrInvalidJSON):
			return newError(codeInvalidJSON, "%s: %v", what, err)
		}
		return newError(codeInvalidResult, "%s: %v", what, err)
	}
	st, err := inst.ch.Complete(eventID, res)
	switch st {
	case ffi.Completed:
		return nil
	case ffi.RetryLater:
		return retryLater
	case ffi.UnknownEvent:
		return newError(codeUnknownEvent, "event %q: %s", eventID, st)
	case ffi.AlreadyCompleted:
		return newError(codeAlreadyCompleted, "event %q: %s", eventID, st)
	case ffi.TimedOut:
		return newError(codeTimedOut, "event %q: %s", eventID, st)
	case ffi.Busy:
		return newError(codeBusy, "event %q: %s", eventID, st)
	case ffi.Stopped:
		return errStopped
	case ffi.InvalidResult:
		if errors.Is(err, ffi.ErrResultMismatch) {
			return newError(codeStepMismatch, "%v", err)
		}
		return newError(codeInvalidResult, "%v", err)
	}
	return internalError(fmt.Sprintf("unexpected completion status %v", st))
}

// batchRange is the accepted range of a batch size, for messages.
var batchRange = fmt.Sprintf("1..%d", ffi.MaxBatch)

// pollBatch takes up to maxEvents events without blocking (stopping at the
// first empty poll) and encodes them as one JSON array, each element exactly
// as taskerworker_poll encodes an event. n is how many it took; n == 0 means
// NO_EVENT. inst nil means no worker is running (arguments are checked
// first).
//
// Every event taken is already pending in the channel, so nothing here may
// lose one: an event that cannot be encoded (which cannot happen for steps
// from the queue, whose payloads are jsonb) is left out and stays pending
// until it times out into a retryable ffi_timeout failure; the others are
// still returned.
func pollBatch(inst *instance, maxEvents int) (out []byte, n int, err error) {
	if maxEvents < 1 || maxEvents > ffi.MaxBatch {
		return nil, 0, newError(codeInvalidArgument, "max is %d; want %s", maxEvents, batchRange)
	}
	if inst == nil {
		return nil, 0, errNotStarted
	}
	buf := make([]byte, 1, 256*min(maxEvents, 64))
	buf[0] = '['
	var lost []string
	for polled := 0; polled < maxEvents; polled++ {
		msg, ok := inst.ch.Poll()
		if !ok {
			break
		}
		mark := len(buf)
		if n > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, err = ffi.AppendEvent(buf, &msg); err != nil {
			buf = buf[:mark]
			lost = append(lost, msg.EventID)
			continue
		}
		n++
	}
	if n == 0 {
		switch {
		case len(lost) > 0:
			return nil, 0, internalError(fmt.Sprintf("encode events %v: they stay pending and will time out into a retry", lost))
		case inst.stopping.Load():
			return nil, 0, errStopped
		}
		return nil, 0, nil
	}
	return append(buf, ']'), n, nil
}

// completeBatch completes the events named by eventIDs ('\n'-separated, one
// trailing newline ignored) with the results in the JSON array resultsJSON,
// pairwise in order. The batch as a whole is checked first (UTF-8, array,
// counts, size; inst nil means not started): if that fails nothing is
// completed and the error is returned with no outcomes. Otherwise each item
// is completed independently, exactly as taskerworker_complete would; if
// every one was completed the result is (nil, nil), else outcomes is the
// JSON array of per-item outcomes and err has code PARTIAL.
//
// Once an item is answered RETRY_LATER (the completion channel stayed full
// for the whole send timeout) the items after it are not attempted and are
// answered RETRY_LATER too: they stay pending, and attempting them would only
// make the call wait one send timeout per item.
func completeBatch(inst *instance, eventIDs string, resultsJSON []byte) (outcomes []byte, err error) {
	if _, err := checkUTF8(eventIDs, "event_ids"); err != nil {
		return nil, err
	}
	ids := splitIDs(eventIDs)
	if len(ids) > ffi.MaxBatch {
		return nil, newError(codeInvalidArgument, "event_ids holds %d ids; want at most %d; nothing was completed", len(ids), ffi.MaxBatch)
	}
	results, err := ffi.SplitResults(resultsJSON)
	if err != nil {
		code := codeInvalidJSON
		if errors.Is(err, ffi.ErrInvalidUTF8) {
			code = codeInvalidUTF8
		}
		return nil, newError(code, "results_json: %v; nothing was completed", err)
	}
	if len(ids) != len(results) {
		return nil, newError(codeInvalidArgument, "event_ids holds %d ids but results_json holds %d results; nothing was completed", len(ids), len(results))
	}
	if inst == nil {
		return nil, errNotStarted
	}
	errs := make([]error, len(ids))
	failed := 0
	full := false
	for i, id := range ids {
		switch {
		case full:
			errs[i] = batchRetryLater
		case id == "":
			errs[i] = newError(codeUnknownEvent, "event_ids[%d] is empty", i)
		default:
			errs[i] = completeOne(inst, id, results[i], i)
			full = errs[i] == retryLater
		}
		if errs[i] != nil {
			failed++
		}
	}
	if failed == 0 {
		return nil, nil
	}
	out := make([]byte, 0, 16*len(errs)+128*failed)
	out = append(out, '[')
	for i, e := range errs {
		if i > 0 {
			out = append(out, ',')
		}
		if e == nil {
			out = append(out, `{"code":0}`...)
			continue
		}
		msg, _ := json.Marshal(e.Error()) // a string always encodes
		out = append(out, `{"code":`...)
		out = strconv.AppendInt(out, int64(codeOf(e)), 10)
		out = append(out, `,"error":`...)
		out = append(out, msg...)
		out = append(out, '}')
	}
	out = append(out, ']')
	return out, newError(codePartial, "%d of %d events were not completed; see outcomes_json", failed, len(errs))
}

// batchRetryLater answers the items after one answered RETRY_LATER.
var batchRetryLater = &abiError{code: codeRetryLater, msg: "not attempted: the completion channel was full for an earlier event of this batch; the event stays pending, send it again"}

// splitIDs splits '\n'-separated ids, ignoring one trailing newline; an
// empty string holds no ids. The ids share eventIDs' memory.
func splitIDs(eventIDs string) []string {
	eventIDs = strings.TrimSuffix(eventIDs, "\n")
	if eventIDs == "" {
		return nil
	}
	return strings.Split(eventIDs, "\n")
}
