package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/ffi"
)

// The exported functions are driven from real Python and Ruby in bindings/;
// these tests cover the pure logic beneath them.

func TestLoadConfigTellsTextFromPaths(t *testing.T) {
	t.Setenv("POD_NAME", "abi-test")
	cfg, err := loadConfig("[worker.queue]\nbatch_size = 7\n")
	if err != nil || cfg.Worker.Queue.BatchSize != 7 || !cfg.Worker.MPSCChannels.FFIDispatch.Enabled || cfg.Worker.WorkerID != "abi-test" {
		t.Fatalf("text config: %+v %v", cfg.Worker.Queue, err)
	}
	path := filepath.Join(t.TempDir(), "w.toml")
	if err := os.WriteFile(path, []byte("[worker.queue]\nbatch_size = 9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err := loadConfig(path); err != nil || cfg.Worker.Queue.BatchSize != 9 {
		t.Fatalf("path config: %v", err)
	}
	_, err = loadConfig("/nonexistent/worker.toml")
	if codeOf(err) != codeConfig || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing path: %v", err)
	}
	_, err = loadConfig("[worker.queue]\nbogus = 1\n")
	if codeOf(err) != codeConfig || !strings.Contains(err.Error(), "worker.queue.bogus") {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestCodesAndMessages(t *testing.T) {
	for _, tc := range []struct {
		err     error
		code    int
		message bool
	}{
		{nil, codeOK, false},
		{retryLater, codeRetryLater, true},
		{errNotStarted, codeNotStarted, true},
		{errNull("x"), codeNullArgument, true},
		{errors.New("plain"), codeInternal, true},
	} {
		if got := codeOf(tc.err); got != tc.code {
			t.Errorf("%v: code %d, want %d", tc.err, got, tc.code)
		}
		if _, ok := errorMessage(tc.err); ok != tc.message {
			t.Errorf("%v: message %v, want %v", tc.err, ok, tc.message)
		}
	}
}

func TestCompleteMapsEveryRefusal(t *testing.T) {
	// Decoding failures are classified before the channel is consulted.
	for in, code := range map[string]int{
		"{\"step_uuid\":\"\xff\"}":               codeInvalidUTF8,
		`{"step_uuid":`:                          codeInvalidJSON,
		`{"success":true}`:                       codeInvalidResult,
		`{"step_uuid":"s","success":true,"x":1}`: codeInvalidJSON,
	} {
		if err := complete(nil, "ev", in); codeOf(err) != code {
			t.Errorf("%q: %v (code %d), want %d", in, err, codeOf(err), code)
		}
	}
	reg := prometheus.NewRegistry()
	m, err := dispatch.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	dispatchCh := make(chan dispatch.StepMessage, 1)
	completion := make(chan *dispatch.Completion, 4)
	inst := &instance{ch: ffi.New(ffi.Config{}, dispatchCh, completion, m, logr.Discard())}
	dispatchCh <- dispatch.StepMessage{EventID: "ev-1", StepUUID: "step-1"}
	if _, ok := inst.ch.Poll(); !ok {
		t.Fatal("poll")
	}
	for _, tc := range []struct {
		id, result string
		code       int
	}{
		{"ev-1", `{"step_uuid":"other","success":true}`, codeStepMismatch},
		{"ev-9", `{"step_uuid":"step-1","success":true}`, codeUnknownEvent},
		{"ev-1", `{"step_uuid":"step-1","success":true}`, codeOK},
		{"ev-1", `{"step_uuid":"step-1","success":true}`, codeAlreadyCompleted},
	} {
		if err := complete(inst, tc.id, tc.result); codeOf(err) != tc.code {
			t.Errorf("complete(%s, %s): %v (code %d), want %d", tc.id, tc.result, err, codeOf(err), tc.code)
		}
	}
	if len(completion) != 1 {
		t.Fatalf("%d completions delivered, want exactly 1", len(completion))
	}
}
