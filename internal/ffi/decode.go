package ffi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

// MaxResultSize bounds a result accepted from a foreign handler, so a
// runaway handler cannot make the worker buffer unbounded JSON.
const MaxResultSize = 16 << 20

// ErrInvalidUTF8 and ErrInvalidJSON classify a result that cannot be decoded,
// so the C ABI can return distinct codes.
var (
	ErrInvalidUTF8 = errors.New("result is not valid UTF-8")
	ErrInvalidJSON = errors.New("result is not valid JSON")
)

// DecodeResult parses a foreign handler's result in the wire format of
// upstream Tasker and normalises it (metadata.retryable mirrors
// error.retryable). Unknown fields are refused, naming the field, so a typo
// in a binding is caught rather than silently dropped; handler-specific data
// belongs in metadata.custom or metadata.context.
//
// It sits on every foreign round trip, so results in the form the bindings
// write (exact field names, strings without escapes) take a hand-written
// path (decodeFast) that gives exactly what encoding/json gives; anything
// else (escapes, unknown or repeated fields, nulls where a value belongs,
// malformed JSON) goes through encoding/json, which also words the error.
func DecodeResult(data []byte) (dispatch.StepExecutionResult, error) {
	if len(data) > MaxResultSize {
		return dispatch.StepExecutionResult{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidJSON, len(data), MaxResultSize)
	}
	if !utf8.Valid(data) {
		return dispatch.StepExecutionResult{}, ErrInvalidUTF8
	}
	r, ok := decodeFast(data)
	if !ok {
		var err error
		if r, err = decodeStd(data); err != nil {
			return dispatch.StepExecutionResult{}, err
		}
	}
	if err := r.Normalize(); err != nil {
		return dispatch.StepExecutionResult{}, err
	}
	return r, nil
}

// decodeStd is the reference decoder: strict encoding/json.
func decodeStd(data []byte) (dispatch.StepExecutionResult, error) {
	var r dispatch.StepExecutionResult
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return dispatch.StepExecutionResult{}, fmt.Errorf("%w: %v (want {\"step_uuid\", \"success\", \"result\", \"status\", \"metadata\", \"error\"})", ErrInvalidJSON, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return dispatch.StepExecutionResult{}, fmt.Errorf("%w: trailing data after the result object", ErrInvalidJSON)
	}
	return r, nil
}
