package ffi

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeResult(t *testing.T) {
	r, err := DecodeResult([]byte(`{"step_uuid":"s","success":false,"status":"error","metadata":{"retryable":true,"custom":{"k":1}},
		"error":{"message":"boom","error_type":"ValueError","retryable":false,"backtrace":["a.py:1"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Metadata.Retryable || r.Error.ErrorType != "ValueError" || r.Metadata.ErrorType != "ValueError" || r.Status != "error" {
		t.Fatalf("normalised %+v %+v", r.Metadata, r.Error)
	}
	for _, tc := range []struct {
		in   string
		want error
		text string
	}{
		{"{\"step_uuid\":\"\xff\"}", ErrInvalidUTF8, "UTF-8"},
		{`{"step_uuid":`, ErrInvalidJSON, "JSON"},
		{`{"step_uuid":"s","success":true,"sucess":true}`, ErrInvalidJSON, `unknown field "sucess"`},
		{`{"step_uuid":"s","success":true} {}`, ErrInvalidJSON, "trailing data"},
		{`[]`, ErrInvalidJSON, "JSON"},
		{`{"success":true}`, nil, "step_uuid is empty"},
	} {
		_, err := DecodeResult([]byte(tc.in))
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%q: %v, want %v mentioning %q", tc.in, err, tc.want, tc.text)
		}
	}
}

// FuzzDecodeResult: the decoder never panics, and whatever it accepts is
// consistent (retryable mirrored, status matching success) and survives a
// round trip.
func FuzzDecodeResult(f *testing.F) {
	for _, s := range []string{
		`{"step_uuid":"s","success":true,"result":{"a":[1,2]}}`,
		`{"step_uuid":"s","success":false,"metadata":{"retryable":true},"error":{"message":"m","retryable":true}}`,
		`{"step_uuid":"s","success":false,"status":"error"}`,
		`{"step_uuid":"s","success":true,"status":"failed"}`,
		`null`, `{}`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeResult(data)
		if err != nil {
			return
		}
		if r.StepUUID == "" {
			t.Fatal("accepted a result without step_uuid")
		}
		if r.Success != (r.Status == "completed") || (!r.Success && (r.Error == nil || r.Error.Retryable != r.Metadata.Retryable)) {
			t.Fatalf("inconsistent result accepted: %+v %+v", r, r.Error)
		}
		b, err := json.Marshal(&r)
		if err != nil {
			t.Fatalf("accepted result does not marshal: %v", err)
		}
		if _, err := DecodeResult(b); err != nil {
			t.Fatalf("round trip refused: %v\n%s", err, b)
		}
	})
}

// Results as the Python and Ruby bindings write them take the fast path;
// each decodes to what encoding/json gives.
func TestDecodeFastTakesBindingResults(t *testing.T) {
	for _, s := range []string{
		`{"step_uuid":"00000000-0000-4000-8000-000000000001","success":true,"result":{"ok":true,"n":[1,2.5,"x"]},"status":"completed","metadata":{"execution_time_ms":0,"retryable":false,"completed_at":"2026-11-27T10:00:00.123456Z"}}`,
		`{"step_uuid":"s","success":true,"result":null,"status":"completed","metadata":{"execution_time_ms":12,"retryable":false}}`,
		`{"step_uuid":"s","success":false,"result":null,"status":"failed","metadata":{"execution_time_ms":3,"retryable":true,"completed_at":"2026-11-27T10:00:00Z","error_type":"ValueError","error_code":"E1","context":{"a":1},"custom":{}},"error":{"message":"boom","error_type":"ValueError","retryable":true,"error_code":"E1","backtrace":["a.py:1","b.py:2"]}}`,
		` { "step_uuid" : "s" , "success" : true , "result" : [ 1 , { } ] , "error" : null } `,
		`{"step_uuid":"s","success":false,"error":{"message":"m","backtrace":[]}}`,
		`{"step_uuid":"ünïcode ✓","success":true}`,
		`{"step_uuid":"s\u0041\ud83d\ude00\ud800\n\"","success":false,"error":{"message":"File \"h.py\"\tline 3"}}`,
	} {
		fast, ok := decodeFast([]byte(s))
		if !ok {
			t.Errorf("fast path declined %s", s)
			continue
		}
		std, err := decodeStd([]byte(s))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if !reflect.DeepEqual(fast, std) {
			t.Errorf("%s:\nfast %#v\nstd  %#v", s, fast, std)
		}
	}
	// Outside the fast form: the fallback decides (and words the error).
	for _, s := range []string{
		`{"st\u0065p_uuid":"s","success":true}`,                  // escaped key
		`{"Step_UUID":"s","success":true}`,                       // case-folded key
		`{"step_uuid":"s","step_uuid":"t","success":true}`,       // repeated key
		`{"step_uuid":"s","success":true,"metadata":null}`,       // null object
		`{"step_uuid":"s","metadata":{"execution_time_ms":1.5}}`, // not an int64
		`{"step_uuid":"s","success":true,"sucess":true}`,         // unknown key
		`{"step_uuid":"s","success":true} x`,                     // trailing data
		`{"step_uuid":"s","success":tru}`,
	} {
		if _, ok := decodeFast([]byte(s)); ok {
			t.Errorf("fast path accepted %s", s)
		}
	}
}

// FuzzDecodeFastMatchesStd: whatever the fast path accepts, encoding/json
// accepts too and decodes to the same value.
func FuzzDecodeFastMatchesStd(f *testing.F) {
	for _, s := range []string{
		`{"step_uuid":"s","success":true,"result":{"a":[1,2]},"status":"completed","metadata":{"execution_time_ms":5,"retryable":false,"completed_at":"2026-01-01T00:00:00Z"}}`,
		`{"step_uuid":"s","success":false,"metadata":{"retryable":true,"context":{"k":"v"}},"error":{"message":"m","retryable":true,"backtrace":["x"]}}`,
		`{"step_uuid":"s","error":null,"result":null}`,
		`{"step_uuid":"s","metadata":{"execution_time_ms":-0}}`,
		`{}`, `null`, `[1]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			return // DecodeResult refuses these before either decoder runs
		}
		fast, ok := decodeFast(data)
		if !ok {
			return
		}
		std, err := decodeStd(data)
		if err != nil {
			t.Fatalf("fast path accepted what encoding/json refuses (%v): %q", err, data)
		}
		if !reflect.DeepEqual(fast, std) {
			t.Fatalf("%q:\nfast %#v\nstd  %#v", data, fast, std)
		}
	})
}

func TestSplitResults(t *testing.T) {
	parts, err := SplitResults([]byte(` [ {"a":"x]\"}"} ,{"b":[1,{}]},null , "s\"" ,12] `))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{"a":"x]\"}"}`, `{"b":[1,{}]}`, `null`, `"s\""`, `12`}
	if len(parts) != len(want) {
		t.Fatalf("%d parts %q", len(parts), parts)
	}
	for i := range want {
		if string(parts[i]) != want[i] {
			t.Errorf("part %d = %s, want %s", i, parts[i], want[i])
		}
	}
	if parts, err := SplitResults([]byte(`[]`)); err != nil || len(parts) != 0 {
		t.Errorf("empty array: %q %v", parts, err)
	}
	for _, tc := range []struct{ in, text string }{
		{`{"step_uuid":"s"}`, "want a JSON array"},
		{`[{"a":1} {"b":2}]`, "want ',' or ']' after array element 0"},
		{`[{"a":1},`, "array element 1 is not a complete JSON value"},
		{`[{"a":1}`, "not closed"},
		{`[1] 2`, "trailing data"},
		{`[{"a":"unterminated}]`, "array element 0"},
	} {
		_, err := SplitResults([]byte(tc.in))
		if !errors.Is(err, ErrInvalidJSON) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want ErrInvalidJSON mentioning %q", tc.in, err, tc.text)
		}
	}
	if _, err := SplitResults([]byte("[" + strings.Repeat("1,", MaxBatch) + "1]")); err == nil || !strings.Contains(err.Error(), "more than 4096") {
		t.Errorf("over MaxBatch: %v", err)
	}
}

// BenchmarkDecodeResult compares the fast path with encoding/json (the
// baseline, in the same run) on the results the bindings send.
func BenchmarkDecodeResult(b *testing.B) {
	inputs := map[string][]byte{
		"success": []byte(`{"step_uuid":"00000000-0000-4000-8000-000000000001","success":true,"result":{"n":1},"status":"completed","metadata":{"execution_time_ms":0,"retryable":false,"completed_at":"2026-11-27T10:00:00.123456Z"}}`),
		"failure": []byte(`{"step_uuid":"00000000-0000-4000-8000-000000000001","success":false,"result":null,"status":"failed","metadata":{"execution_time_ms":3,"retryable":true,"completed_at":"2026-11-27T10:00:00.123456Z","error_type":"ValueError"},"error":{"message":"boom","error_type":"ValueError","retryable":true,"backtrace":["Traceback (most recent call last):","  File \"h.py\", line 3, in run","ValueError: boom"]}}`),
	}
	for _, name := range []string{"success", "failure"} {
		in := inputs[name]
		b.Run(name+"/std", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r, err := decodeStd(in)
				if err == nil {
					err = r.Normalize()
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeResult(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
