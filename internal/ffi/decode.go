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
func DecodeResult(data []byte) (dispatch.StepExecutionResult, error) {
	var r dispatch.StepExecutionResult
	if len(data) > MaxResultSize {
		return r, fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidJSON, len(data), MaxResultSize)
	}
	if !utf8.Valid(data) {
		return r, ErrInvalidUTF8
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return dispatch.StepExecutionResult{}, fmt.Errorf("%w: %v (want {\"step_uuid\", \"success\", \"result\", \"status\", \"metadata\", \"error\"})", ErrInvalidJSON, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return dispatch.StepExecutionResult{}, fmt.Errorf("%w: trailing data after the result object", ErrInvalidJSON)
	}
	if err := r.Normalize(); err != nil {
		return dispatch.StepExecutionResult{}, err
	}
	return r, nil
}
