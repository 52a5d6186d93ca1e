// Package monitoring holds what the tests share to check the project's
// monitoring as Prometheus and Grafana read it: PromQL parsed by
// Prometheus's own parser and checked against the metric families the
// worker and the operator serve; the Grafana dashboard, with its variables
// expanded as Grafana does; the PrometheusRule's groups as a Prometheus rule
// file; the ServiceMonitors as the scrape configs prometheus-operator
// generates from them, with their relabeling applied by Prometheus's own
// code; and the promtool and prometheus binaries pinned in hack/tools/go.mod.
package monitoring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var tools struct {
	sync.Mutex
	dirs map[string]string // by binary name
}

// Tool returns the path of promtool or prometheus at the release
// hack/tools/go.mod pins, as hack/build-prometheus.sh builds it into its
// cache (a binary already there is reused at once; the first build takes
// minutes).
func Tool(t testing.TB, name string) string {
	t.Helper()
	tools.Lock()
	defer tools.Unlock()
	if dir, ok := tools.dirs[name]; ok {
		return filepath.Join(dir, name)
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "build-prometheus.sh"), name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/build-prometheus.sh %s: %v\n%s", name, err, stderr.String())
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Fatalf("hack/build-prometheus.sh %s printed %q: %v", name, dir, err)
	}
	if tools.dirs == nil {
		tools.dirs = map[string]string{}
	}
	tools.dirs[name] = dir
	return filepath.Join(dir, name)
}

// RepoRoot is the repository's top directory, found from the working
// directory (go test runs each package in its own directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "build-prometheus.sh")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no hack/build-prometheus.sh above the working directory")
		}
		dir = parent
	}
}
