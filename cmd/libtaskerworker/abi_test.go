package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

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
		{newError(codePartial, "1 of 2 events were not completed; see outcomes_json"), codePartial, true},
		{newError(codeInvalidArgument, "max is 0; want 1..4096"), codeInvalidArgument, true},
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
		if err := complete(nil, "ev", []byte(in)); codeOf(err) != code {
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
		if err := complete(inst, tc.id, []byte(tc.result)); codeOf(err) != tc.code {
			t.Errorf("complete(%s, %s): %v (code %d), want %d", tc.id, tc.result, err, codeOf(err), tc.code)
		}
	}
	if len(completion) != 1 {
		t.Fatalf("%d completions delivered, want exactly 1", len(completion))
	}
}

// testInstance is an instance over a real ffi.Channel fed by the returned
// dispatch channel and delivering into the returned completion channel.
func testInstance(t *testing.T, cfg ffi.Config, completionCap int) (*instance, chan dispatch.StepMessage, chan *dispatch.Completion) {
	t.Helper()
	m, err := dispatch.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	dispatchCh := make(chan dispatch.StepMessage, 64)
	completion := make(chan *dispatch.Completion, completionCap)
	return &instance{ch: ffi.New(cfg, dispatchCh, completion, m, logr.Discard())}, dispatchCh, completion
}

func stepMsg(i int) dispatch.StepMessage {
	return dispatch.StepMessage{
		EventID: fmt.Sprintf("ev-%d", i), StepUUID: fmt.Sprintf("step-%d", i), TaskUUID: "task",
		Handler: "noop", Payload: json.RawMessage(`{"n":1}`), Attempt: 1, TimeoutMs: 5,
	}
}

func okResult(i int) string {
	return fmt.Sprintf(`{"step_uuid":"step-%d","success":true,"result":{"i":%d},"status":"completed","metadata":{"execution_time_ms":1}}`, i, i)
}

// pollN polls n events one by one, failing the test if any is missing.
func pollN(t *testing.T, inst *instance, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, ok := inst.ch.Poll(); !ok {
			t.Fatalf("poll %d: no event", i)
		}
	}
}

type outcome struct {
	Code  int     `json:"code"`
	Error *string `json:"error"`
}

func decodeOutcomes(t *testing.T, out []byte) []outcome {
	t.Helper()
	var o []outcome
	if err := json.Unmarshal(out, &o); err != nil {
		t.Fatalf("outcomes %s: %v", out, err)
	}
	return o
}

// compact normalises a decoded event's payload, which AppendEvent passes
// through as stored while json.Marshal compacts and HTML-escapes it.
func compact(t *testing.T, m dispatch.StepMessage) dispatch.StepMessage {
	t.Helper()
	var v any
	if err := json.Unmarshal(m.Payload, &v); err != nil {
		t.Fatal(err)
	}
	m.Payload, _ = json.Marshal(v)
	return m
}

func TestPollBatchRefusesMaxOutOfRange(t *testing.T) {
	inst, dispatchCh, _ := testInstance(t, ffi.Config{}, 4)
	dispatchCh <- stepMsg(1)
	for _, max := range []int{0, -1, ffi.MaxBatch + 1} {
		out, n, err := pollBatch(inst, max)
		if codeOf(err) != codeInvalidArgument || out != nil || n != 0 {
			t.Fatalf("max %d: %q %d %v, want INVALID_ARGUMENT", max, out, n, err)
		}
		msg, ok := errorMessage(err)
		if !ok || !strings.Contains(msg, "max") || !strings.Contains(msg, strconv.Itoa(max)) || !strings.Contains(msg, "1..4096") {
			t.Errorf("max %d: message %q should name max, the value and 1..4096", max, msg)
		}
		// Checked before the instance: the same answer when not started.
		if _, _, err := pollBatch(nil, max); codeOf(err) != codeInvalidArgument {
			t.Errorf("max %d, not started: %v", max, err)
		}
	}
	if inst.ch.PendingCount() != 0 || len(dispatchCh) != 1 {
		t.Fatalf("a refused poll_batch took events: pending %d, queued %d", inst.ch.PendingCount(), len(dispatchCh))
	}
	if _, _, err := pollBatch(nil, 1); codeOf(err) != codeNotStarted {
		t.Fatalf("not started: %v", err)
	}
	if out, n, err := pollBatch(inst, ffi.MaxBatch); err != nil || n != 1 || out == nil {
		t.Fatalf("max %d: %q %d %v", ffi.MaxBatch, out, n, err)
	}
}

func TestPollBatchTakesWhatThereIs(t *testing.T) {
	inst, dispatchCh, _ := testInstance(t, ffi.Config{}, 4)
	var want []dispatch.StepMessage
	for i := 1; i <= 5; i++ {
		m := stepMsg(i)
		if i == 2 {
			m.CorrelationID, m.Payload = "corr", json.RawMessage(`{"s":"<é\u2028>"}`)
		}
		want = append(want, m)
		dispatchCh <- m
	}
	check := func(out []byte, msgs []dispatch.StepMessage) {
		t.Helper()
		var elems []json.RawMessage
		if err := json.Unmarshal(out, &elems); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		if len(elems) != len(msgs) {
			t.Fatalf("%d events, want %d: %s", len(elems), len(msgs), out)
		}
		for i := range msgs {
			single, _ := ffi.AppendEvent(nil, &msgs[i]) // what taskerworker_poll returns
			if !bytes.Equal(elems[i], single) {
				t.Errorf("event %d: %s, want %s", i, elems[i], single)
			}
			var got, marshalled dispatch.StepMessage
			std, _ := json.Marshal(&msgs[i])
			if json.Unmarshal(elems[i], &got) != nil || json.Unmarshal(std, &marshalled) != nil || !reflect.DeepEqual(compact(t, got), compact(t, marshalled)) {
				t.Errorf("event %d: %s does not mean what json.Marshal gives: %s", i, elems[i], std)
			}
		}
	}
	// Fewer than max when max is smaller than the backlog, oldest first.
	out, n, err := pollBatch(inst, 3)
	if err != nil || n != 3 {
		t.Fatalf("poll_batch(3): %d %v", n, err)
	}
	check(out, want[:3])
	// Fewer than max when the channel runs dry.
	out, n, err = pollBatch(inst, 64)
	if err != nil || n != 2 {
		t.Fatalf("poll_batch(64): %d %v", n, err)
	}
	check(out, want[3:])
	if got := inst.ch.PendingCount(); got != 5 {
		t.Fatalf("pending %d, want 5: every returned event is pending", got)
	}
	// NO_EVENT on an empty channel.
	if out, n, err := pollBatch(inst, 64); out != nil || n != 0 || err != nil {
		t.Fatalf("empty: %q %d %v, want NO_EVENT", out, n, err)
	}
	// STOPPED once stopping and nothing is left.
	inst.stopping.Store(true)
	if _, n, err := pollBatch(inst, 64); n != 0 || codeOf(err) != codeStopped {
		t.Fatalf("stopping: %d %v", n, err)
	}
}

func TestCompleteBatchAllCompleted(t *testing.T) {
	for _, ids := range []string{"ev-1\nev-2\nev-3", "ev-1\nev-2\nev-3\n"} {
		inst, dispatchCh, completion := testInstance(t, ffi.Config{WorkerID: "w"}, 8)
		for i := 1; i <= 3; i++ {
			dispatchCh <- stepMsg(i)
		}
		pollN(t, inst, 3)
		results := " [ " + okResult(1) + " ,\n" + okResult(2) + "," + okResult(3) + " ] "
		out, err := completeBatch(inst, ids, []byte(results))
		if err != nil || out != nil {
			t.Fatalf("%q: %s %v, want OK with no outcomes", ids, out, err)
		}
		if len(completion) != 3 || inst.ch.PendingCount() != 0 {
			t.Fatalf("%q: %d completions, %d pending", ids, len(completion), inst.ch.PendingCount())
		}
		for i := 1; i <= 3; i++ {
			c := <-completion
			if c.Message.EventID != fmt.Sprintf("ev-%d", i) || c.Result.StepUUID != fmt.Sprintf("step-%d", i) ||
				!c.Result.Success || c.Result.Metadata.WorkerID != "w" {
				t.Errorf("completion %d: %+v", i, c)
			}
		}
	}
	inst, _, _ := testInstance(t, ffi.Config{}, 1)
	if out, err := completeBatch(inst, "", []byte("[]")); err != nil || out != nil {
		t.Fatalf("empty batch: %s %v", out, err)
	}
}

func TestCompleteBatchPartial(t *testing.T) {
	inst, dispatchCh, completion := testInstance(t, ffi.Config{}, 16)
	for i := 1; i <= 6; i++ {
		dispatchCh <- stepMsg(i)
	}
	pollN(t, inst, 6)
	if err := complete(inst, "ev-2", []byte(okResult(2))); err != nil {
		t.Fatal(err)
	}
	items := []struct {
		id, result string
		code       int
		msg        string
	}{
		{"ev-1", okResult(1), codeOK, ""},
		{"ev-9", okResult(1), codeUnknownEvent, "ev-9"},
		{"ev-2", okResult(2), codeAlreadyCompleted, "ev-2"},
		{"ev-3", okResult(4), codeStepMismatch, "step-4"},
		{"ev-4", `{"step_uuid":}`, codeInvalidJSON, "results_json[4]"},
		{"ev-5", `{"step_uuid":"step-5","success":true,"bogus":1}`, codeInvalidJSON, "bogus"},
		{"", okResult(6), codeUnknownEvent, "event_ids[6] is empty"},
		{"ev-6", okResult(6), codeOK, ""},
	}
	var ids []string
	var results []string
	for _, it := range items {
		ids = append(ids, it.id)
		results = append(results, it.result)
	}
	out, err := completeBatch(inst, strings.Join(ids, "\n"), []byte("["+strings.Join(results, ",")+"]"))
	if codeOf(err) != codePartial {
		t.Fatalf("code %d (%v), want PARTIAL", codeOf(err), err)
	}
	if msg, ok := errorMessage(err); !ok || msg != "6 of 8 events were not completed; see outcomes_json" {
		t.Errorf("last error %q %v", msg, ok)
	}
	got := decodeOutcomes(t, out)
	if len(got) != len(items) {
		t.Fatalf("%d outcomes, want %d: %s", len(got), len(items), out)
	}
	for i, it := range items {
		o := got[i]
		if o.Code != it.code {
			t.Errorf("item %d (%s): code %d, want %d (%v)", i, it.id, o.Code, it.code, o.Error)
		}
		switch {
		case it.code == codeOK && o.Error != nil:
			t.Errorf("item %d: error %q on success", i, *o.Error)
		case it.code != codeOK && (o.Error == nil || !strings.Contains(*o.Error, it.msg)):
			t.Errorf("item %d: error %v, want it to mention %q", i, o.Error, it.msg)
		}
	}
	if !bytes.HasPrefix(out, []byte(`[{"code":0},{"code":-8,"error":"event \"ev-9\": unknown event id"},`)) {
		t.Errorf("outcomes format: %s", out)
	}
	// ev-2 before, ev-1 and ev-6 now; the refused ones stay pending and can
	// still be completed.
	if len(completion) != 3 || inst.ch.PendingCount() != 3 {
		t.Fatalf("%d completions, %d pending; want 3 and 3", len(completion), inst.ch.PendingCount())
	}
	out, err = completeBatch(inst, "ev-3\nev-4\nev-5", []byte("["+okResult(3)+","+okResult(4)+","+okResult(5)+"]"))
	if err != nil || out != nil || inst.ch.PendingCount() != 0 {
		t.Fatalf("second batch: %s %v, %d pending", out, err, inst.ch.PendingCount())
	}
}

func TestCompleteBatchRetryLaterWhenCompletionChannelFull(t *testing.T) {
	inst, dispatchCh, completion := testInstance(t, ffi.Config{CompletionSendTimeout: 20 * time.Millisecond}, 2)
	for i := 1; i <= 4; i++ {
		dispatchCh <- stepMsg(i)
	}
	pollN(t, inst, 4)
	ids := "ev-1\nev-2\nev-3\nev-4"
	results := []byte("[" + okResult(1) + "," + okResult(2) + "," + okResult(3) + "," + okResult(4) + "]")
	start := time.Now()
	out, err := completeBatch(inst, ids, results)
	if codeOf(err) != codePartial {
		t.Fatalf("%v, want PARTIAL", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v: items after a RETRY_LATER should not each wait the send timeout", d)
	}
	got := decodeOutcomes(t, out)
	for i, want := range []int{codeOK, codeOK, codeRetryLater, codeRetryLater} {
		if got[i].Code != want || (want != codeOK) != (got[i].Error != nil) {
			t.Errorf("item %d: %+v, want code %d", i, got[i], want)
		}
	}
	if inst.ch.PendingCount() != 2 {
		t.Fatalf("pending %d, want 2 (the RETRY_LATER ones)", inst.ch.PendingCount())
	}
	<-completion
	<-completion
	if out, err := completeBatch(inst, "ev-3\nev-4", []byte("["+okResult(3)+","+okResult(4)+"]")); err != nil || out != nil {
		t.Fatalf("resend: %s %v", out, err)
	}
	if len(completion) != 2 || inst.ch.PendingCount() != 0 {
		t.Fatalf("%d completions, %d pending", len(completion), inst.ch.PendingCount())
	}
}

func TestCompleteBatchRefusedWholeCompletesNothing(t *testing.T) {
	inst, dispatchCh, completion := testInstance(t, ffi.Config{}, 8)
	dispatchCh <- stepMsg(1)
	dispatchCh <- stepMsg(2)
	pollN(t, inst, 2)
	two := "[" + okResult(1) + "," + okResult(2) + "]"
	for _, tc := range []struct {
		name, ids, results string
		code               int
		msg                []string
	}{
		{"count mismatch", "ev-1\nev-2", "[" + okResult(1) + "]", codeInvalidArgument, []string{"2 ids", "1 results", "nothing was completed"}},
		{"count mismatch, trailing id", "ev-1\nev-2\nev-3", two, codeInvalidArgument, []string{"3 ids", "2 results"}},
		{"not an array", "ev-1", okResult(1), codeInvalidJSON, []string{"results_json", "array", "nothing was completed"}},
		{"array not closed", "ev-1\nev-2", "[" + okResult(1) + "," + okResult(2), codeInvalidJSON, []string{"not closed"}},
		{"trailing data", "ev-1\nev-2", two + "x", codeInvalidJSON, []string{"trailing"}},
		{"ids not UTF-8", "ev-1\n\xff", two, codeInvalidUTF8, []string{"event_ids"}},
		{"too many ids", strings.Repeat("ev-1\n", ffi.MaxBatch+1), two, codeInvalidArgument, []string{"4097", "4096"}},
	} {
		out, err := completeBatch(inst, tc.ids, []byte(tc.results))
		if codeOf(err) != tc.code || out != nil {
			t.Errorf("%s: %s %v (code %d), want code %d and no outcomes", tc.name, out, err, codeOf(err), tc.code)
			continue
		}
		for _, m := range tc.msg {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: message %q lacks %q", tc.name, err, m)
			}
		}
	}
	if _, err := completeBatch(nil, "ev-1", []byte("["+okResult(1)+"]")); codeOf(err) != codeNotStarted {
		t.Errorf("not started: %v", err)
	}
	if len(completion) != 0 || inst.ch.PendingCount() != 2 {
		t.Fatalf("a refused batch completed something: %d completions, %d pending", len(completion), inst.ch.PendingCount())
	}
	if out, err := completeBatch(inst, "ev-1\nev-2\n", []byte(two)); err != nil || out != nil {
		t.Fatalf("after the refusals: %s %v", out, err)
	}
	if len(completion) != 2 || inst.ch.PendingCount() != 0 {
		t.Fatalf("%d completions, %d pending", len(completion), inst.ch.PendingCount())
	}
}

func TestStopHandlesAnInstanceWithoutWorker(t *testing.T) {
	inst, _, _ := testInstance(t, ffi.Config{}, 1)
	inst.done = make(chan struct{})
	cancelled := false
	inst.cancel = func() { cancelled = true; close(inst.done) }
	running.Store(inst)
	t.Cleanup(func() { running.Store(nil) })
	if err := stop(50); err != nil || !cancelled || running.Load() != nil {
		t.Fatalf("stop: %v, cancelled %v, running %v", err, cancelled, running.Load())
	}
}
