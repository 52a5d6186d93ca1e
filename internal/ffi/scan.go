package ffi

import (
	"fmt"
)

// MaxBatch bounds how many events one batched poll or complete may carry,
// so a single foreign call cannot hold an unbounded share of the channel.
const MaxBatch = 4096

// SplitResults cuts a JSON array of results into its elements without
// decoding them, so a batched complete decodes each result once (with
// DecodeResult) instead of twice. It checks the array's own punctuation;
// each element's content is checked when it is decoded, so a malformed
// element fails alone. An empty array gives no elements.
func SplitResults(data []byte) ([][]byte, error) {
	if len(data) > MaxResultSize*4 {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidJSON, len(data), MaxResultSize*4)
	}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, fmt.Errorf("%w: want a JSON array of results", ErrInvalidJSON)
	}
	i = skipSpace(data, i+1)
	var out [][]byte
	if i < len(data) && data[i] == ']' {
		if skipSpace(data, i+1) != len(data) {
			return nil, fmt.Errorf("%w: trailing data after the array", ErrInvalidJSON)
		}
		return out, nil
	}
	for {
		end, ok := skipValue(data, i)
		if !ok {
			return nil, fmt.Errorf("%w: array element %d is not a complete JSON value", ErrInvalidJSON, len(out))
		}
		if len(out) == MaxBatch {
			return nil, fmt.Errorf("%w: more than %d results in one batch", ErrInvalidJSON, MaxBatch)
		}
		out = append(out, data[i:end])
		i = skipSpace(data, end)
		if i >= len(data) {
			return nil, fmt.Errorf("%w: the array is not closed", ErrInvalidJSON)
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case ']':
			if skipSpace(data, i+1) != len(data) {
				return nil, fmt.Errorf("%w: trailing data after the array", ErrInvalidJSON)
			}
			return out, nil
		default:
			return nil, fmt.Errorf("%w: want ',' or ']' after array element %d, found %q", ErrInvalidJSON, len(out)-1, data[i])
		}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(data []byte, i int) int {
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	return i
}

// skipValue finds the end of the JSON value starting at data[i]. It tracks
// strings (with escapes) and bracket nesting but does not validate what is
// inside: callers validate the value itself. ok is false when the value is
// cut short or starts with something no JSON value starts with.
func skipValue(data []byte, i int) (end int, ok bool) {
	if i >= len(data) {
		return i, false
	}
	switch c := data[i]; {
	case c == '"':
		return skipString(data, i)
	case c == '{' || c == '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				e, ok := skipString(data, i)
				if !ok {
					return e, false
				}
				i = e
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return i, false
	case c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z':
		// A number or a literal (true, false, null): runs to the next
		// delimiter.
		j := i
		for j < len(data) && !isSpace(data[j]) && data[j] != ',' && data[j] != ']' && data[j] != '}' && data[j] != ':' {
			j++
		}
		return j, true
	}
	return i, false
}

// skipString returns the index just past the closing quote of the string
// starting at data[i].
func skipString(data []byte, i int) (int, bool) {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return len(data), false
}
