package ffi

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
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
