package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics, whatever the bytes (the error
// explanation re-parses the document at the reported position, so it must
// survive every error go-toml can produce), and that anything Parse accepts
// renders to a file that parses back to the same Config.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.toml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, c := range []Config{Default(), nonDefault()} {
		out, err := c.Render()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(out)
	}
	for _, doc := range []string{
		"[worker]\nqueue = { batch_size = \"x\", bogus = 1 }\n",
		"[worker.queue]\nnamespaces = [\"a\", [1], {b = 2}]\n",
		"[[worker]]\n[[worker.queue]]\n",
		"worker.queue.batch_size.x = 1\n",
		"[worker.mpsc_channels.handler_dispatch]\nsaturation_warning_threshold = nan\n",
		"[worker.queue\n",
		"\"\\u0000\" = '\r\n",
	} {
		f.Add([]byte(doc))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("Parse() returned an empty error message")
			}
			return
		}
		out, err := cfg.Render()
		if err != nil {
			t.Fatalf("Render() of a parsed config: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Render()) error: %v\ninput:\n%q\nrendered:\n%s", err, data, out)
		}
		if !reflect.DeepEqual(again, cfg) {
			t.Fatalf("round trip changed the config:\n%+v\nwant\n%+v\nrendered:\n%s", again, cfg, out)
		}
	})
}
