package ffi

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

// decodeFast decodes a result written the way the bindings write one. It
// answers ok=false, and the caller falls back to encoding/json, for anything
// outside that form: a key that is not exactly a field name, a repeated key,
// a string with escapes, null where an object, string, number or bool
// belongs, or malformed JSON. What it accepts it decodes exactly as
// encoding/json would (FuzzDecodeFastMatchesStd checks this), so the
// fallback changes speed, never meaning.
//
// encoding/json spends most of its time on reflection and on validating the
// input twice; a result has a fixed shape, so one pass over the bytes does.
func decodeFast(data []byte) (r dispatch.StepExecutionResult, ok bool) {
	d := fastDecoder{data: data}
	if !d.object(func(key []byte) bool {
		switch string(key) {
		case "step_uuid":
			r.StepUUID, ok = d.str()
		case "success":
			r.Success, ok = d.boolean()
		case "status":
			r.Status, ok = d.str()
		case "result":
			var raw []byte
			if raw, ok = d.rawValue(); ok {
				r.Result = append(json.RawMessage(nil), raw...)
			}
		case "metadata":
			ok = d.metadata(&r.Metadata)
		case "error":
			if d.literal("null") {
				r.Error, ok = nil, true
				break
			}
			r.Error = &dispatch.StepError{}
			ok = d.stepError(r.Error)
		default:
			return false
		}
		return ok
	}) {
		return dispatch.StepExecutionResult{}, false
	}
	if skipSpace(data, d.i) != len(data) {
		return dispatch.StepExecutionResult{}, false
	}
	return r, true
}

type fastDecoder struct {
	data []byte
	i    int
}

func (d *fastDecoder) space() { d.i = skipSpace(d.data, d.i) }

// object walks an object's members, calling member with each key while the
// cursor is at the value; member decodes the value. A key seen twice (at
// this level) is refused: encoding/json would merge, which is not worth
// copying here. Objects in a result have at most 16 distinct keys that the
// callers accept, so remembering them is cheap.
func (d *fastDecoder) object(member func(key []byte) bool) bool {
	d.space()
	if d.i >= len(d.data) || d.data[d.i] != '{' {
		return false
	}
	d.i++
	d.space()
	if d.i < len(d.data) && d.data[d.i] == '}' {
		d.i++
		return true
	}
	var seen [16][]byte
	n := 0
	for {
		key, ok := d.plainString()
		if !ok {
			return false
		}
		for _, k := range seen[:n] {
			if bytes.Equal(k, key) {
				return false
			}
		}
		if n == len(seen) {
			return false
		}
		seen[n] = key
		n++
		d.space()
		if d.i >= len(d.data) || d.data[d.i] != ':' {
			return false
		}
		d.i++
		d.space()
		if !member(key) {
			return false
		}
		d.space()
		if d.i >= len(d.data) {
			return false
		}
		switch d.data[d.i] {
		case ',':
			d.i++
			d.space()
		case '}':
			d.i++
			return true
		default:
			return false
		}
	}
}

// plainString reads a string literal without escapes or control characters
// and returns its content (aliasing the input).
func (d *fastDecoder) plainString() ([]byte, bool) {
	if d.i >= len(d.data) || d.data[d.i] != '"' {
		return nil, false
	}
	start := d.i + 1
	for j := start; j < len(d.data); j++ {
		switch c := d.data[j]; {
		case c == '"':
			d.i = j + 1
			return d.data[start:j], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// str reads a string value. One without escapes is copied straight; one
// with escapes (a Python traceback quotes file names) is unquoted by
// encoding/json itself, so surrogates and invalid escapes come out exactly
// as there.
func (d *fastDecoder) str() (string, bool) {
	if d.i >= len(d.data) || d.data[d.i] != '"' {
		return "", false
	}
	escaped := false
	for j := d.i + 1; j < len(d.data); j++ {
		switch c := d.data[j]; {
		case c == '\\':
			escaped = true
			j++
		case c == '"':
			lit := d.data[d.i : j+1]
			d.i = j + 1
			if !escaped {
				return string(lit[1 : len(lit)-1]), true
			}
			var s string
			return s, json.Unmarshal(lit, &s) == nil
		case c < 0x20:
			return "", false
		}
	}
	return "", false
}

func (d *fastDecoder) literal(word string) bool {
	if !bytes.HasPrefix(d.data[d.i:], []byte(word)) {
		return false
	}
	// The literal must end at a delimiter, or "nullx" would pass.
	if end := d.i + len(word); end < len(d.data) {
		switch d.data[end] {
		case ' ', '\t', '\n', '\r', ',', '}', ']':
		default:
			return false
		}
	}
	d.i += len(word)
	return true
}

func (d *fastDecoder) boolean() (bool, bool) {
	switch {
	case d.literal("true"):
		return true, true
	case d.literal("false"):
		return false, true
	}
	return false, false
}

// int64 reads an integer literal in JSON's grammar (no fraction or
// exponent: encoding/json refuses those for an int64 field, so the fallback
// reports them).
func (d *fastDecoder) int64() (int64, bool) {
	start, j := d.i, d.i
	if j < len(d.data) && d.data[j] == '-' {
		j++
	}
	digits := j
	for j < len(d.data) && d.data[j] >= '0' && d.data[j] <= '9' {
		j++
	}
	if j == digits || (d.data[digits] == '0' && j-digits > 1) {
		return 0, false
	}
	if j < len(d.data) {
		switch d.data[j] {
		case ' ', '\t', '\n', '\r', ',', '}', ']':
		default:
			return 0, false
		}
	}
	v, err := strconv.ParseInt(string(d.data[start:j]), 10, 64)
	if err != nil {
		return 0, false
	}
	d.i = j
	return v, true
}

// rawValue returns any JSON value verbatim, validated.
func (d *fastDecoder) rawValue() ([]byte, bool) {
	end, ok := skipValue(d.data, d.i)
	if !ok || !json.Valid(d.data[d.i:end]) {
		return nil, false
	}
	v := d.data[d.i:end]
	d.i = end
	return v, true
}

// anyMap decodes a free-form object (metadata.context, metadata.custom) with
// encoding/json itself: these are rare and hold arbitrary values.
func (d *fastDecoder) anyMap(m *map[string]any) bool {
	raw, ok := d.rawValue()
	if !ok || raw[0] != '{' {
		return false
	}
	return json.Unmarshal(raw, m) == nil
}

func (d *fastDecoder) metadata(md *dispatch.ResultMetadata) bool {
	return d.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "execution_time_ms":
			md.ExecutionTimeMs, ok = d.int64()
		case "retryable":
			md.Retryable, ok = d.boolean()
		case "completed_at":
			start := d.i
			if _, ok = d.plainString(); ok {
				// The quoted literal, as encoding/json hands it to time.Time.
				ok = md.CompletedAt.UnmarshalJSON(d.data[start:d.i]) == nil
			}
		case "worker_id":
			md.WorkerID, ok = d.str()
		case "error_type":
			md.ErrorType, ok = d.str()
		case "error_code":
			md.ErrorCode, ok = d.str()
		case "context":
			ok = d.anyMap(&md.Context)
		case "custom":
			ok = d.anyMap(&md.Custom)
		}
		return ok
	})
}

func (d *fastDecoder) stepError(e *dispatch.StepError) bool {
	return d.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "message":
			e.Message, ok = d.str()
		case "error_type":
			e.ErrorType, ok = d.str()
		case "error_code":
			e.ErrorCode, ok = d.str()
		case "retryable":
			e.Retryable, ok = d.boolean()
		case "backtrace":
			e.Backtrace, ok = d.strings()
		}
		return ok
	})
}

// strings reads an array of plain strings (an empty array gives an empty,
// non-nil slice, as encoding/json does).
func (d *fastDecoder) strings() ([]string, bool) {
	if d.i >= len(d.data) || d.data[d.i] != '[' {
		return nil, false
	}
	d.i++
	d.space()
	out := []string{}
	if d.i < len(d.data) && d.data[d.i] == ']' {
		d.i++
		return out, true
	}
	for {
		s, ok := d.str()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		d.space()
		if d.i >= len(d.data) {
			return nil, false
		}
		switch d.data[d.i] {
		case ',':
			d.i++
			d.space()
		case ']':
			d.i++
			return out, true
		default:
			return nil, false
		}
	}
}
