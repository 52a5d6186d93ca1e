package main

import (
	"context"
	"errors"
	"fmt"
	"os"
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
// calling thread: nothing for a plain success.
func errorMessage(err error) (string, bool) {
	if err == nil || codeOf(err) >= 0 && err != retryLater {
		return "", false
	}
	return err.Error(), true
}

func version() string { return taskerworker.Version }

// instance is a running worker. Calls load it atomically and never hold a
// lock while they work, so a slow Complete never blocks other threads.
type instance struct {
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
	drain := inst.drain
	if timeoutMs > 0 {
		drain = time.Duration(timeoutMs) * time.Millisecond
		inst.w.SetDrainTimeout(drain)
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

func complete(inst *instance, eventID, resultJSON string) error {
	res, err := ffi.DecodeResult([]byte(resultJSON))
	switch {
	case errors.Is(err, ffi.ErrInvalidUTF8):
		return newError(codeInvalidUTF8, "result_json: %v", err)
	case errors.Is(err, ffi.ErrInvalidJSON):
		return newError(codeInvalidJSON, "result_json: %v", err)
	case err != nil:
		return newError(codeInvalidResult, "result_json: %v", err)
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
