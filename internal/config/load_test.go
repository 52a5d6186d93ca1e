package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "worker.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoad(t *testing.T) {
	good := writeFile(t, "[worker.queue]\nbatch_size = 20\n")
	bad := writeFile(t, "[worker.queue]\nbatch_size = 0\n")
	missing := filepath.Join(t.TempDir(), "absent.toml")

	wantGood := Default()
	wantGood.Worker.Queue.BatchSize = 20

	tests := []struct {
		name    string
		path    string
		want    Config
		wantErr []string
		isErr   error
	}{
		{"valid file", good, wantGood, nil, nil},
		{"missing file", missing, Config{}, []string{"read config " + missing + ": "}, fs.ErrNotExist},
		{"invalid file", bad, Config{}, []string{"config " + bad + ": ", "worker.queue.batch_size = 0"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load(tt.path)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Load() = %+v, want %+v", got, tt.want)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Load() error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Load() error = nil, want one")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tt.isErr != nil && !errors.Is(err, tt.isErr) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.isErr)
			}
		})
	}
}

func TestFromEnv(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skipf("no hostname: %v", err)
	}
	withID := writeFile(t, "[worker]\nworker_id = \"from-file\"\n[worker.drain]\ntimeout_ms = 1000\n")
	withoutID := writeFile(t, "[worker.drain]\ntimeout_ms = 2000\n")
	bad := writeFile(t, "[worker.drain]\ntimeout = 1\n")

	expect := func(id string, drainMS int64) Config {
		c := Default()
		c.Worker.WorkerID = id
		c.Worker.Drain.TimeoutMS = drainMS
		return c
	}
	tests := []struct {
		name     string
		path     string // value of TASKER_CONFIG_PATH; "" leaves it empty
		pod      string // value of POD_NAME; "" leaves it empty
		want     Config
		wantPath string
		wantErr  string
	}{
		{"no path: defaults, id from POD_NAME", "", "pool-abc", expect("pool-abc", 60000), "", ""},
		{"no path, no POD_NAME: id from hostname", "", "", expect(host, 60000), "", ""},
		{"file without worker_id: id from POD_NAME", withoutID, "pool-abc", expect("pool-abc", 2000), withoutID, ""},
		{"worker_id in the file wins", withID, "pool-abc", expect("from-file", 1000), withID, ""},
		{"invalid file", bad, "pool-abc", Config{}, bad, "unknown key worker.drain.timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvConfigPath, tt.path)
			t.Setenv(EnvPodName, tt.pod)
			got, path, err := FromEnv()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FromEnv() error = %v, want one containing %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("FromEnv() error: %v", err)
			}
			if path != tt.wantPath {
				t.Errorf("FromEnv() path = %q, want %q", path, tt.wantPath)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("FromEnv() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}
