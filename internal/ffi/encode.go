package ffi

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

// AppendEvent appends the JSON of a polled event, as foreign handlers
// receive it, to dst. It gives the same bytes as json.Marshal(msg) for the
// events a queue produces (ids and handler names of plain ASCII, a compact
// payload), without reflection; a field outside that form is encoded by
// encoding/json itself, so the output is always what json.Marshal would
// give, up to the payload's insignificant whitespace, which is passed
// through as stored. A payload that is not valid JSON is an error, as it is
// for json.Marshal.
func AppendEvent(dst []byte, msg *dispatch.StepMessage) ([]byte, error) {
	dst = append(dst, `{"event_id":`...)
	dst = appendString(dst, msg.EventID)
	dst = append(dst, `,"step_uuid":`...)
	dst = appendString(dst, msg.StepUUID)
	dst = append(dst, `,"task_uuid":`...)
	dst = appendString(dst, msg.TaskUUID)
	if msg.CorrelationID != "" {
		dst = append(dst, `,"correlation_id":`...)
		dst = appendString(dst, msg.CorrelationID)
	}
	dst = append(dst, `,"handler":`...)
	dst = appendString(dst, msg.Handler)
	if len(msg.Payload) > 0 {
		if !json.Valid(msg.Payload) {
			_, err := json.Marshal(msg.Payload) // the error encoding/json gives
			return dst, err
		}
		dst = append(dst, `,"payload":`...)
		dst = append(dst, msg.Payload...)
	}
	dst = append(dst, `,"attempt":`...)
	dst = strconv.AppendInt(dst, int64(msg.Attempt), 10)
	if msg.TimeoutMs != 0 {
		dst = append(dst, `,"timeout_ms":`...)
		dst = strconv.AppendInt(dst, msg.TimeoutMs, 10)
	}
	return append(dst, '}'), nil
}

// appendString appends s as a JSON string: directly when it needs no
// escaping under encoding/json's rules (which also escape <, > and & for
// HTML), through json.Marshal otherwise.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= utf8.RuneSelf {
			b, _ := json.Marshal(s) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
