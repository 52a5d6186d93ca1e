package ffi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

func TestAppendEventMatchesMarshal(t *testing.T) {
	base := dispatch.StepMessage{EventID: "42.1", StepUUID: "00000000-0000-4000-8000-000000000042", TaskUUID: "t",
		Handler: "noop", Payload: json.RawMessage(`{"n":1}`), Attempt: 1}
	cases := map[string]func(*dispatch.StepMessage){
		"plain":          func(*dispatch.StepMessage) {},
		"all fields":     func(m *dispatch.StepMessage) { m.CorrelationID, m.TimeoutMs, m.Attempt = "corr-1", 2500, 3 },
		"no payload":     func(m *dispatch.StepMessage) { m.Payload = nil },
		"escapes":        func(m *dispatch.StepMessage) { m.Handler, m.CorrelationID = "a\"b\\c\n\x01<&>", "ünï ✓ \u2028" },
		"stored payload": func(m *dispatch.StepMessage) { m.Payload = json.RawMessage(`{"n": 1, "s": "<x>", "a": [1, 2]}`) },
		"scalar payload": func(m *dispatch.StepMessage) { m.Payload = json.RawMessage(`"x"`) },
	}
	for name, mutate := range cases {
		msg := base
		mutate(&msg)
		got, err := AppendEvent(nil, &msg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, err := json.Marshal(&msg)
		if err != nil {
			t.Fatal(err)
		}
		// json.Marshal compacts (and HTML-escapes) a RawMessage; AppendEvent
		// passes the stored payload through. Both must mean the same.
		var g, w map[string]any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: AppendEvent gave invalid JSON %s: %v", name, got, err)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
		if name == "plain" || name == "all fields" || name == "no payload" || name == "escapes" {
			if !bytes.Equal(got, want) {
				t.Errorf("%s: bytes differ:\n got %s\nwant %s", name, got, want)
			}
		}
	}
	bad := base
	bad.Payload = json.RawMessage(`{"n":`)
	if _, err := AppendEvent(nil, &bad); err == nil {
		t.Error("an invalid payload was encoded")
	}
}

// BenchmarkEncodeEvent: AppendEvent against json.Marshal (the baseline, in
// the same run).
func BenchmarkEncodeEvent(b *testing.B) {
	msg := dispatch.StepMessage{EventID: "42.1", StepUUID: "00000000-0000-4000-8000-000000000042",
		TaskUUID: "00000000-0000-4000-8000-000000000042", Handler: "noop", Payload: json.RawMessage(`{"n":1}`), Attempt: 1}
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			var err error
			if buf, err = AppendEvent(buf[:0], &msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
