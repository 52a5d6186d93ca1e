package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePartialKeepsDefaults(t *testing.T) {
	tests := []struct {
		name   string
		doc    string
		mutate func(*Config) // applied to Default() to get the expected Config
	}{
		{"empty document", "", func(*Config) {}},
		{"comments only", "# nothing set\n\n", func(*Config) {}},
		{"worker_id only", "[worker]\nworker_id = \"pod-1\"\n",
			func(c *Config) { c.Worker.WorkerID = "pod-1" }},
		{"one handler key", "[worker.mpsc_channels.handler_dispatch]\nmax_concurrent_handlers = 64\n",
			func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.MaxConcurrentHandlers = 64 }},
		{"float key written as integer", "[worker.mpsc_channels.handler_dispatch]\nsaturation_critical_threshold = 1\n",
			func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.SaturationCriticalThreshold = 1 }},
		{"ffi keys", "[worker.mpsc_channels.ffi_dispatch]\nenabled = true\ncallback_strategy = \"Blocking\"\ncallback_timeout_ms = 0\n",
			func(c *Config) {
				c.Worker.MPSCChannels.FFIDispatch.Enabled = true
				c.Worker.MPSCChannels.FFIDispatch.CallbackStrategy = CallbackBlocking
				c.Worker.MPSCChannels.FFIDispatch.CallbackTimeoutMS = 0
			}},
		{"namespaces replace the default", "[worker.queue]\nnamespaces = [\"payments\", \"billing\"]\n",
			func(c *Config) { c.Worker.Queue.Namespaces = []string{"payments", "billing"} }},
		{"new queue keys", "[worker.queue]\nmax_attempts = 3\nheartbeat_interval_ms = 5000\n",
			func(c *Config) {
				c.Worker.Queue.MaxAttempts = 3
				c.Worker.Queue.HeartbeatIntervalMS = 5000
			}},
		{"load shedding", "[worker.load_shedding]\nrefuse_threshold_percent = 90\n",
			func(c *Config) { c.Worker.LoadShedding.RefuseThresholdPercent = 90 }},
		{"drain", "[worker.drain]\ntimeout_ms = 120000\n",
			func(c *Config) { c.Worker.Drain.TimeoutMS = 120000 }},
		{"http", "[worker.http]\nlisten_address = \"127.0.0.1:9191\"\n",
			func(c *Config) { c.Worker.HTTP.ListenAddress = "127.0.0.1:9191" }},
		{"dotted key at top level", "worker.queue.batch_size = 50\n",
			func(c *Config) { c.Worker.Queue.BatchSize = 50 }},
		{"inline table", "[worker]\ndrain = { timeout_ms = 5000 }\nhttp = { listen_address = \":1\" }\n",
			func(c *Config) {
				c.Worker.Drain.TimeoutMS = 5000
				c.Worker.HTTP.ListenAddress = ":1"
			}},
		{"inline table keeps the other keys of its table", "[worker]\nqueue = { batch_size = 7 }\n",
			func(c *Config) { c.Worker.Queue.BatchSize = 7 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := Default()
			tt.mutate(&want)
			got, err := Parse([]byte(tt.doc))
			if err != nil {
				t.Fatalf("Parse() error: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse() =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestParseSeedExamples(t *testing.T) {
	tests := []struct {
		file     string
		workerID string
	}{
		{"seed.toml", "..."},                // docs/ARCHITECTURE.md, verbatim
		{"full.toml", "payments-7c9-abcde"}, // every key
		{"seed-ffi-dispatch.toml", ""},      // the seed plan's ffi_dispatch table alone
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse(%s) error: %v", tt.file, err)
			}
			want := Default()
			want.Worker.WorkerID = tt.workerID
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(%s) =\n%+v\nwant\n%+v", tt.file, got, want)
			}
		})
	}
}

func TestParseUnknownKey(t *testing.T) {
	const (
		handlerKeys = "accepted keys: dispatch_buffer_size, completion_buffer_size, max_concurrent_handlers, " +
			"handler_timeout_ms, completion_send_timeout_ms, saturation_warning_threshold, saturation_critical_threshold"
		ffiKeys = "accepted keys: enabled, dispatch_buffer_size, completion_timeout_ms, starvation_warning_threshold_ms, " +
			"callback_timeout_ms, callback_strategy, service_id"
		queueKeys  = "accepted keys: namespaces, visibility_timeout_ms, batch_size, poll_interval_ms, max_attempts, heartbeat_interval_ms"
		workerKeys = "accepted keys: worker_id, mpsc_channels, queue, load_shedding, drain, http"
	)
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"top-level key", "bogus = 1\n",
			[]string{"unknown key bogus (line 1, column 1)", "the top level has no key bogus", "accepted keys: worker"}},
		{"top-level table", "[bogus]\nx = 1\n",
			[]string{"unknown key bogus (line 1, column 2)", "the top level has no key bogus", "accepted keys: worker"}},
		{"worker key", "[worker]\nworkerid = \"a\"\n",
			[]string{"unknown key worker.workerid (line 2, column 1)", "table [worker] has no key workerid", workerKeys}},
		{"worker sub-table", "[worker.metrics]\nport = 1\n",
			[]string{"unknown key worker.metrics", "table [worker] has no key metrics", workerKeys}},
		{"sub-table of an unknown table", "[worker.metrics.http]\n",
			[]string{"unknown key worker.metrics.http", "table [worker] has no key metrics", workerKeys}},
		{"mpsc_channels key", "[worker.mpsc_channels]\nbuffer = 1\n",
			[]string{"unknown key worker.mpsc_channels.buffer", "table [worker.mpsc_channels] has no key buffer",
				"accepted keys: handler_dispatch, ffi_dispatch"}},
		{"mpsc_channels sub-table (upstream's other channels)", "[worker.mpsc_channels.command_processor]\nbuffer = 1\n",
			[]string{"unknown key worker.mpsc_channels.command_processor", "accepted keys: handler_dispatch, ffi_dispatch"}},
		{"handler_dispatch key", "[worker.mpsc_channels.handler_dispatch]\nmax_handlers = 3\n",
			[]string{"unknown key worker.mpsc_channels.handler_dispatch.max_handlers (line 2, column 1)",
				"table [worker.mpsc_channels.handler_dispatch] has no key max_handlers", handlerKeys}},
		{"ffi_dispatch key", "[worker.mpsc_channels.ffi_dispatch]\nenabled = true\nbogus_key = 1\n",
			[]string{"unknown key worker.mpsc_channels.ffi_dispatch.bogus_key (line 3, column 1)",
				"table [worker.mpsc_channels.ffi_dispatch] has no key bogus_key", ffiKeys}},
		{"queue key (the DSN never goes in the file)", "[worker.queue]\ndatabase_url = \"postgres://\"\n",
			[]string{"unknown key worker.queue.database_url", "table [worker.queue] has no key database_url", queueKeys}},
		{"load_shedding key", "[worker.load_shedding]\nwarning_percent = 1\n",
			[]string{"unknown key worker.load_shedding.warning_percent", "table [worker.load_shedding]",
				"accepted keys: warning_threshold_percent, refuse_threshold_percent"}},
		{"drain key", "[worker.drain]\ntimeout = 1\n",
			[]string{"unknown key worker.drain.timeout", "table [worker.drain] has no key timeout", "accepted keys: timeout_ms"}},
		{"http key", "[worker.http]\nport = 9090\n",
			[]string{"unknown key worker.http.port", "table [worker.http] has no key port", "accepted keys: listen_address"}},
		{"dotted key", "[worker]\nmpsc_channels.ffi_dispatch.bogus_key = 1\n",
			[]string{"unknown key worker.mpsc_channels.ffi_dispatch.bogus_key (line 2, column 1)", ffiKeys}},
		{"dotted key at top level", "worker.queue.bogus = 1\n",
			[]string{"unknown key worker.queue.bogus", queueKeys}},
		{"key inside an inline table", "[worker]\nqueue = { batch_size = 2, bogus = 3 }\n",
			[]string{"unknown key worker.queue.bogus (line 2, column 27)", "table [worker.queue] has no key bogus", queueKeys}},
		{"quoted key", "[worker.queue]\n\"batch.size\" = 2\n",
			[]string{`unknown key worker.queue."batch.size"`, `has no key "batch.size"`, queueKeys}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse() = %+v, want an error", got)
			}
			if !reflect.DeepEqual(got, Config{}) {
				t.Errorf("Parse() returned a non-zero Config with its error: %+v", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseReportsEveryUnknownKeyAndRangeProblem(t *testing.T) {
	doc := `
[worker.mpsc_channels.handler_dispatch]
max_handlers = 3
[worker.queue]
batch_size = 0
[worker.drain]
timeout = 1
`
	_, err := Parse([]byte(doc))
	errs := joined(err)
	if len(errs) != 3 {
		t.Fatalf("Parse() reported %d problems, want 3:\n%v", len(errs), err)
	}
	for _, w := range []string{
		"unknown key worker.mpsc_channels.handler_dispatch.max_handlers",
		"unknown key worker.drain.timeout",
		"worker.queue.batch_size = 0: must be between 1 and 10000",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
}

// The retention table parses strictly like every other table: its keys are
// read, an unknown one is named with the keys it accepts, a wrong type names
// the key.
func TestParseRetention(t *testing.T) {
	cfg, err := Parse([]byte("[worker.queue.retention]\ncompleted_after_ms = 3600000\ndead_after_ms = 86400000\nbatch_size = 50\ninterval_ms = 250\nenabled = false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Worker.Queue.Retention; r != (Retention{Enabled: false, CompletedAfterMS: 3600000, DeadAfterMS: 86400000, BatchSize: 50, IntervalMS: 250}) {
		t.Fatalf("retention = %+v", r)
	}
	if d := Default().Worker.Queue.Retention; !d.Enabled || d.CompletedAfter() != 24*time.Hour || d.DeadAfter() != 7*24*time.Hour ||
		d.BatchSize != 1000 || d.Interval() != time.Minute {
		t.Fatalf("default retention = %+v", d)
	}
	_, err = Parse([]byte("[worker.queue.retention]\ncompleted_after = 5\n"))
	if err == nil || !strings.Contains(err.Error(), "unknown key worker.queue.retention.completed_after") ||
		!strings.Contains(err.Error(), "accepted keys: enabled, completed_after_ms, dead_after_ms, batch_size, interval_ms") {
		t.Fatalf("unknown retention key: %v", err)
	}
	_, err = Parse([]byte("[worker.queue.retention]\ndead_after_ms = \"7d\"\n"))
	if err == nil || !strings.Contains(err.Error(), "wrong type for worker.queue.retention.dead_after_ms") {
		t.Fatalf("wrong retention type: %v", err)
	}
}

func TestParseLimits(t *testing.T) {
	var many strings.Builder
	many.WriteString("[worker.queue]\n")
	for i := range maxExplained + 5 {
		fmt.Fprintf(&many, "unknown_%d = 1\n", i)
	}
	padded := "[worker.queue]\nbatch_size = 20\n" + strings.Repeat("#", MaxFileSize)

	tests := []struct {
		name  string
		doc   string
		want  []string
		count int // individual errors reported
	}{
		{"unknown keys past the first few are counted", many.String(),
			[]string{"unknown key worker.queue.unknown_0 ", fmt.Sprintf("unknown key worker.queue.unknown_%d ", maxExplained-1), "and 5 more unknown keys"},
			maxExplained + 1},
		{"file over the size limit", padded,
			[]string{fmt.Sprintf("worker config is %d bytes, over the limit of %d", len(padded), MaxFileSize)},
			1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if n := len(joined(err)); n != tt.count {
				t.Errorf("Parse() reported %d errors, want %d:\n%v", n, tt.count, err)
			}
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Parse() error = %v, want one containing %q", err, w)
				}
			}
		})
	}
}

func TestParseWrongType(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"string for integer", "[worker.mpsc_channels.handler_dispatch]\nmax_concurrent_handlers = \"ten\"\n",
			`wrong type for worker.mpsc_channels.handler_dispatch.max_concurrent_handlers (line 2, column 27): found string "ten", expected an integer`},
		{"literal string for integer", "[worker.queue]\nbatch_size = '10'\n",
			`wrong type for worker.queue.batch_size (line 2, column 14): found string '10', expected an integer`},
		{"string for duration", "[worker.drain]\ntimeout_ms = \"60s\"\n",
			`wrong type for worker.drain.timeout_ms (line 2, column 14): found string "60s", expected an integer`},
		{"float for integer", "[worker.queue]\nbatch_size = 1.5\n",
			`wrong type for worker.queue.batch_size (line 2, column 14): found float 1.5, expected an integer`},
		{"string for float", "[worker.mpsc_channels.handler_dispatch]\nsaturation_warning_threshold = \"80%\"\n",
			`wrong type for worker.mpsc_channels.handler_dispatch.saturation_warning_threshold (line 2, column 32): found string "80%", expected a number`},
		{"string for boolean", "[worker.mpsc_channels.ffi_dispatch]\nenabled = \"yes\"\n",
			`wrong type for worker.mpsc_channels.ffi_dispatch.enabled (line 2, column 11): found string "yes", expected a boolean (true or false)`},
		{"integer for string", "[worker.mpsc_channels.ffi_dispatch]\ncallback_strategy = 1\n",
			`wrong type for worker.mpsc_channels.ffi_dispatch.callback_strategy (line 2, column 21): found integer 1, expected a string`},
		{"integer for listen address", "[worker.http]\nlisten_address = 9090\n",
			`wrong type for worker.http.listen_address (line 2, column 18): found integer 9090, expected a string`},
		{"date for integer", "[worker.queue]\nbatch_size = 2024-01-01\n",
			`wrong type for worker.queue.batch_size (line 2, column 14): found local date 2024-01-01, expected an integer`},
		{"string for array", "[worker.queue]\nnamespaces = \"default\"\n",
			`wrong type for worker.queue.namespaces (line 2, column 14): found string "default", expected an array of strings`},
		{"integer in array", "[worker.queue]\nnamespaces = [\"a\",\n  3]\n",
			`wrong type for worker.queue.namespaces (line 3, column 3): found integer 3 in the array, expected an array of strings`},
		{"array for integer", "[worker.queue]\nbatch_size = [1, 2]\n",
			`wrong type for worker.queue.batch_size (line 2, column 14): found array [1, 2], expected an integer`},
		{"table for integer", "[worker.queue.batch_size]\nvalue = 1\n",
			`wrong type for worker.queue.batch_size (line 1, column 2): found table [worker.queue.batch_size], expected an integer`},
		{"integer for table", "[worker]\ndrain = 60000\n",
			`wrong type for worker.drain (line 2, column 9): found integer 60000, expected a table`},
		{"array of tables for table", "[[worker]]\nworker_id = \"a\"\n",
			`wrong type for worker (line 1, column 3): found array of tables [[worker]], expected a table`},
		{"inside an inline table", "[worker]\nqueue = { batch_size = \"x\" }\n",
			`wrong type for worker.queue.batch_size (line 2, column 24): found string "x", expected an integer`},
		{"key below a value", "worker.queue.batch_size.x = 1\n",
			`wrong type for worker.queue.batch_size (line 1, column 25): found a table (key worker.queue.batch_size.x), expected an integer`},
		{"table below a value", "[worker.http.listen_address.x]\n",
			`wrong type for worker.http.listen_address (line 1, column 2): found a table (key worker.http.listen_address.x), expected a string`},
		{"long value is shortened", "[worker.http]\nlisten_address = [\"" + strings.Repeat("é", 40) + "\"]\n",
			`wrong type for worker.http.listen_address (line 2, column 18): found array ["` + strings.Repeat("é", 27) + `..., expected a string`},
		{"dotted key", "worker.queue.max_attempts = true\n",
			`wrong type for worker.queue.max_attempts (line 1, column 29): found boolean true, expected an integer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse() = %+v, want an error", got)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse() error\n got: %v\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestParseInvalidTOML(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"unclosed table header", "[worker.queue\n",
			"invalid TOML (line 1, column 14): expected ']' to close table name"},
		{"missing value", "[worker.queue]\nbatch_size =\n",
			"invalid TOML (line 2, column 13)"},
		{"duplicate key", "[worker.queue]\nbatch_size = 1\nbatch_size = 2\n",
			"worker.queue.batch_size = 2 (line 3, column 1): key batch_size is already defined"},
		{"duplicate table", "[worker.drain]\n[worker.drain]\n",
			"[worker.drain] (line 2, column 2): table"},
		{"integer out of range", "[worker.queue]\nbatch_size = 99999999999999999999\n",
			"worker.queue.batch_size = 99999999999999999999 (line 2, column 14): decimal number is too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// nonDefault sets every key to a valid value that differs from its default,
// so a round trip proves each key is both written and read.
func nonDefault() Config {
	return Config{Worker: Worker{
		WorkerID: "payments-7c9-abcde",
		MPSCChannels: MPSCChannels{
			HandlerDispatch: HandlerDispatch{
				DispatchBufferSize:          2048,
				CompletionBufferSize:        4096,
				MaxConcurrentHandlers:       64,
				HandlerTimeoutMS:            120000,
				CompletionSendTimeoutMS:     2500,
				SaturationWarningThreshold:  0.1 + 0.2, // not exactly representable in short form
				SaturationCriticalThreshold: 0.975,
			},
			FFIDispatch: FFIDispatch{
				Enabled:                      true,
				DispatchBufferSize:           300,
				CompletionTimeoutMS:          45000,
				StarvationWarningThresholdMS: 15000,
				CallbackTimeoutMS:            750,
				CallbackStrategy:             CallbackBlockingWithTimeout,
				ServiceID:                    "ffi-payments",
			},
		},
		Queue: Queue{
			Namespaces:          []string{"payments", "billing_eu", "refunds-2"},
			VisibilityTimeoutMS: 90000,
			BatchSize:           25,
			PollIntervalMS:      250,
			MaxAttempts:         8,
			HeartbeatIntervalMS: 20000,
			Retention: Retention{Enabled: false, CompletedAfterMS: 3600000, DeadAfterMS: 30 * 24 * 3600000,
				BatchSize: 250, IntervalMS: 15000},
		},
		LoadShedding: LoadShedding{WarningThresholdPercent: 60, RefuseThresholdPercent: 95},
		Drain:        Drain{TimeoutMS: 300000},
		HTTP:         HTTP{ListenAddress: "0.0.0.0:9191"},
	}}
}

func TestRenderRoundTrip(t *testing.T) {
	blocking := Default()
	blocking.Worker.MPSCChannels.FFIDispatch.CallbackStrategy = CallbackBlocking
	blocking.Worker.MPSCChannels.FFIDispatch.CallbackTimeoutMS = 0

	oddStrings := nonDefault()
	oddStrings.Worker.WorkerID = "quote\" back\\slash\ttab\nnewline 'single' ünïcode 🚀 # not a comment"
	oddStrings.Worker.MPSCChannels.FFIDispatch.ServiceID = "[worker.mpsc_channels]"
	oddStrings.Worker.HTTP.ListenAddress = "[::1]:9090"

	tests := []struct {
		name string
		cfg  Config
	}{
		{"defaults", Default()},
		{"every key non-default", nonDefault()},
		{"Blocking without callback timeout", blocking},
		{"strings that need escaping", oddStrings},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err != nil {
				t.Fatalf("test config is invalid: %v", err)
			}
			out, err := tt.cfg.Render()
			if err != nil {
				t.Fatalf("Render() error: %v", err)
			}
			again, err := tt.cfg.Render()
			if err != nil || string(again) != string(out) {
				t.Fatalf("Render() is not deterministic:\n%s\n---\n%s", out, again)
			}
			got, err := Parse(out)
			if err != nil {
				t.Fatalf("Parse(Render()) error: %v\n%s", err, out)
			}
			if !reflect.DeepEqual(got, tt.cfg) {
				t.Errorf("Parse(Render(c)) =\n%+v\nwant\n%+v\nrendered:\n%s", got, tt.cfg, out)
			}
		})
	}
}

func TestRenderLayout(t *testing.T) {
	out, err := nonDefault().Render()
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	// The tables appear once each, in the documented order.
	pos := -1
	for _, header := range []string{
		"[worker]\n",
		"[worker.mpsc_channels.handler_dispatch]\n",
		"[worker.mpsc_channels.ffi_dispatch]\n",
		"[worker.queue]\n",
		"[worker.queue.retention]\n",
		"[worker.load_shedding]\n",
		"[worker.drain]\n",
		"[worker.http]\n",
	} {
		i := strings.Index(text, header)
		if i < 0 || strings.Count(text, header) != 1 {
			t.Fatalf("rendered file has %q %d times, want once:\n%s", header, strings.Count(text, header), text)
		}
		if i <= pos {
			t.Errorf("%q is out of order:\n%s", header, text)
		}
		pos = i
	}
	if strings.Contains(text, "[worker.mpsc_channels]") {
		t.Errorf("rendered file has an empty [worker.mpsc_channels] header:\n%s", text)
	}
	// Every key of the schema is written, milliseconds as integers.
	for _, line := range []string{
		"worker_id = ", "dispatch_buffer_size = 2048\n", "completion_buffer_size = 4096\n",
		"max_concurrent_handlers = 64\n", "handler_timeout_ms = 120000\n", "completion_send_timeout_ms = 2500\n",
		"saturation_warning_threshold = ", "saturation_critical_threshold = 0.975\n", "enabled = true\n",
		"dispatch_buffer_size = 300\n", "completion_timeout_ms = 45000\n", "starvation_warning_threshold_ms = 15000\n",
		"callback_timeout_ms = 750\n", "callback_strategy = ", "service_id = ", "namespaces = [",
		"visibility_timeout_ms = 90000\n", "batch_size = 25\n", "poll_interval_ms = 250\n", "max_attempts = 8\n",
		"heartbeat_interval_ms = 20000\n", "warning_threshold_percent = 60\n", "refuse_threshold_percent = 95\n",
		"timeout_ms = 300000\n", "listen_address = ",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("rendered file lacks %q:\n%s", line, text)
		}
	}

	// An empty worker_id is left out: each pod fills in its own.
	out, err = Default().Render()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "worker_id") {
		t.Errorf("Render() wrote an empty worker_id:\n%s", out)
	}
}
