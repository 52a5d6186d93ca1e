package config

// This file turns go-toml's decode errors into messages that name the full
// dotted key. go-toml reports a position for every error, but its key is
// incomplete inside inline tables (for `hd = {x = 1}` it names the inline
// table, not x) and it does not expose the offending value. So the position
// is mapped back onto the document with go-toml's own parser, and the key is
// looked up in Config's toml tags to say what the key accepts.

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// unknownKeyError explains one entry of a *toml.StrictMissingError.
func unknownKeyError(doc []byte, e *toml.DecodeError) error {
	line, col := e.Position()
	key := []string(e.Key())
	if h, ok := locate(doc, offsetOf(doc, line, col)); ok {
		key = h.key
	}
	t, depth := schemaWalk(key)
	table := "the top level"
	if depth > 0 {
		table = "table [" + formatKey(key[:depth]) + "]"
	}
	part := ""
	if depth < len(key) {
		part = key[depth]
	}
	return fmt.Errorf("unknown key %s (line %d, column %d): %s has no key %s; accepted keys: %s",
		formatKey(key), line, col, table, formatKey([]string{part}), strings.Join(tableKeys(t), ", "))
}

// decodeError explains an error that stopped decoding: a value of the wrong
// type, a number out of range, a duplicate key or a syntax error.
func decodeError(doc []byte, err error) error {
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return fmt.Errorf("parse worker config: %w", err)
	}
	line, col := de.Position()
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	h, ok := locate(doc, offsetOf(doc, line, col))
	if !ok {
		// The error is not inside a complete key-value or table header,
		// which is the case of syntax errors.
		if k := de.Key(); len(k) > 0 {
			return fmt.Errorf("invalid TOML at %s (line %d, column %d): %s", formatKey(k), line, col, msg)
		}
		return fmt.Errorf("invalid TOML (line %d, column %d): %s", line, col, msg)
	}
	t, depth := schemaWalk(h.key)
	if depth == len(h.key) && !accepts(t, h) {
		found := kindName(h.kind) + " " + h.text
		if h.element {
			found += " in the array"
		}
		return fmt.Errorf("wrong type for %s (line %d, column %d): found %s, expected %s",
			formatKey(h.key), line, col, found, typeName(t))
	}
	if depth > 0 && depth < len(h.key) && t.Kind() != reflect.Struct {
		// A key below a value, e.g. worker.queue.batch_size.x: the value
		// is used as a table.
		return fmt.Errorf("wrong type for %s (line %d, column %d): found a table (key %s), expected %s",
			formatKey(h.key[:depth]), line, col, formatKey(h.key), typeName(t))
	}
	what := formatKey(h.key) + " = " + h.text
	if h.kind == unstable.Table || h.kind == unstable.ArrayTable {
		what = h.text
	}
	return fmt.Errorf("%s (line %d, column %d): %s", what, line, col, msg)
}

// hit is what the document holds where an error points.
type hit struct {
	key     []string      // full dotted key of the innermost key-value or table header
	kind    unstable.Kind // kind of the value found; Table or ArrayTable for a header
	text    string        // the value as written, shortened
	element bool          // the error points at one element of an array
}

// locate finds the innermost key-value or table header whose text contains
// offset. Keys of inline tables are followed, so the key is complete.
func locate(doc []byte, offset int) (hit, bool) {
	var (
		p     unstable.Parser
		table []string
		found hit
		ok    bool
	)
	var visit func(kv *unstable.Node, prefix []string)
	visit = func(kv *unstable.Node, prefix []string) {
		key, start, _ := keyOf(kv)
		r := kv.Raw
		if offset < start || offset >= int(r.Offset+r.Length) {
			return
		}
		key = append(append([]string(nil), prefix...), key...)
		v := kv.Value()
		found, ok = hit{key: key, kind: v.Kind, text: valueText(doc, kv)}, true
		switch v.Kind {
		case unstable.InlineTable:
			for it := v.Children(); it.Next(); {
				if n := it.Node(); n.Kind == unstable.KeyValue {
					visit(n, key)
				}
			}
		case unstable.Array:
			for it := v.Children(); it.Next(); {
				n := it.Node()
				if n.Raw.Length > 0 && int(n.Raw.Offset) == offset {
					found.kind, found.text, found.element = n.Kind, shorten(string(p.Raw(n.Raw))), true
				}
			}
		}
	}
	p.Reset(doc)
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			var start, end int
			table, start, end = keyOf(e)
			if offset >= start && offset < end {
				text := "[" + formatKey(table) + "]"
				if e.Kind == unstable.ArrayTable {
					text = "[" + text + "]"
				}
				found, ok = hit{key: table, kind: e.Kind, text: text}, true
			}
		case unstable.KeyValue:
			visit(e, table)
		}
	}
	return found, ok
}

// keyOf returns the parts of the key of a key-value or table node and the
// byte range the key covers.
func keyOf(n *unstable.Node) (parts []string, start, end int) {
	start = -1
	for it := n.Key(); it.Next(); {
		k := it.Node()
		parts = append(parts, string(k.Data))
		if start < 0 {
			start = int(k.Raw.Offset)
		}
		end = int(k.Raw.Offset + k.Raw.Length)
	}
	return parts, start, end
}

// valueText returns the value of a key-value as written: scalars carry their
// own range; arrays and inline tables run from after '=' to the end of the
// expression.
func valueText(doc []byte, kv *unstable.Node) string {
	if v := kv.Value(); v.Kind != unstable.Array && v.Kind != unstable.InlineTable {
		return shorten(string(doc[v.Raw.Offset : v.Raw.Offset+v.Raw.Length]))
	}
	_, _, keyEnd := keyOf(kv)
	s := string(doc[keyEnd : kv.Raw.Offset+kv.Raw.Length])
	s = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "="))
	return shorten(s)
}

// shorten keeps messages to one readable line.
func shorten(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= 60 {
		return s
	}
	i := 57
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}

// offsetOf converts go-toml's 1-based line and byte column into an offset.
func offsetOf(doc []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(doc[off:], '\n')
		if i < 0 {
			return len(doc)
		}
		off += i + 1
	}
	return off + col - 1
}

// schemaWalk follows key through Config's toml tags. It returns the type at
// the deepest part found and how many parts were found.
func schemaWalk(key []string) (reflect.Type, int) {
	t := reflect.TypeFor[Config]()
	for i, part := range key {
		f, ok := fieldByKey(t, part)
		if !ok {
			return t, i
		}
		t = f.Type
	}
	return t, len(key)
}

// fieldByKey finds the field of struct type t whose toml key is name.
func fieldByKey(t reflect.Type, name string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := range t.NumField() {
		if f := t.Field(i); tomlKey(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// tableKeys lists the keys a table accepts, in declaration order, which is
// the order Render writes them.
func tableKeys(t reflect.Type) []string {
	if t.Kind() != reflect.Struct {
		return nil
	}
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		keys = append(keys, tomlKey(t.Field(i)))
	}
	return keys
}

func tomlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

// accepts reports whether a value of the kind found can be decoded into t.
func accepts(t reflect.Type, h hit) bool {
	switch t.Kind() {
	case reflect.Struct:
		return h.kind == unstable.Table || h.kind == unstable.InlineTable
	case reflect.Slice:
		if h.element {
			return h.kind == unstable.String
		}
		return h.kind == unstable.Array
	case reflect.String:
		return h.kind == unstable.String
	case reflect.Bool:
		return h.kind == unstable.Bool
	case reflect.Int, reflect.Int64:
		return h.kind == unstable.Integer
	case reflect.Float64:
		return h.kind == unstable.Float || h.kind == unstable.Integer
	}
	return false
}

// typeName names the TOML type a Go field type expects.
func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct:
		return "a table"
	case reflect.Slice:
		return "an array of strings"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Float64:
		return "a number"
	}
	return t.String()
}

// kindName names the TOML type of a value found in the document.
func kindName(k unstable.Kind) string {
	switch k {
	case unstable.Table:
		return "table"
	case unstable.ArrayTable:
		return "array of tables"
	case unstable.InlineTable:
		return "inline table"
	case unstable.Array:
		return "array"
	case unstable.String:
		return "string"
	case unstable.Bool:
		return "boolean"
	case unstable.Float:
		return "float"
	case unstable.Integer:
		return "integer"
	case unstable.LocalDate:
		return "local date"
	case unstable.LocalTime:
		return "local time"
	case unstable.LocalDateTime:
		return "local date-time"
	case unstable.DateTime:
		return "date-time"
	}
	return k.String()
}

// formatKey writes a dotted key, quoting parts that are not bare keys.
func formatKey(parts []string) string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = p
		if p == "" || strings.IndexFunc(p, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}) >= 0 {
			out[i] = strconv.Quote(p)
		}
	}
	return strings.Join(out, ".")
}
