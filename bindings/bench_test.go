package bindings_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
)

// BenchmarkRoundTrip measures poll + complete round trips through
// libtaskerworker.so, from C and from one Python thread, one event per call
// and in batches (taskerworker_poll_batch / taskerworker_complete_batch),
// against two event sources:
//
//   - queue: a real worker on a deep backlog (b.N noop steps preloaded into a
//     fresh database, claimed into a large dispatch channel). Its events/s
//     can never pass what PostgreSQL claims and settles end to end.
//   - memory: the library built with -tags ffibench, whose DB-free source
//     feeds no-op events into the same FFI channel that poll and complete
//     use (cmd/libtaskerworker/benchsource.go). This isolates what the C ABI
//     and the bindings cost.
//
// The paths:
//   - c, c-batch: bindings/c/roundtrip_bench.c, a C program linked against
//     the library (cgo exports cannot be called from a Go test, and a second
//     Go runtime cannot be loaded into this one): the floor under every
//     binding.
//   - python: bindings/python/bench.py, "binding" (what Poller does per
//     event or per batch: decode the events, run the handler, encode the
//     results, complete) and "raw-" (preformatted results: the floor of
//     ctypes plus the C ABI).
//
// Only round trips are timed (a poll that finds the dispatch channel empty
// while the queue refills it is not). In a batch, each event's time is the
// batch's time divided by its events. ns/op is the mean; p50-µs and
// events/s (1 / mean) are reported too. docs/benchmarks.md compares them with
// BenchmarkPollComplete in internal/ffi (the same round trip in Go).
//
//	go test -run='^$' -bench=RoundTrip -benchtime=60000x ./bindings/
func BenchmarkRoundTrip(b *testing.B) {
	for _, batch := range []int{1, 64} {
		name := "c"
		if batch > 1 {
			name = fmt.Sprintf("c-batch%d", batch)
		}
		b.Run(name+"/queue", func(b *testing.B) { benchC(b, batch) })
		b.Run(name+"/memory", func(b *testing.B) { benchCMemory(b, batch) })
	}
	for _, batch := range []int{1, 64} {
		name := "python"
		if batch > 1 {
			name = fmt.Sprintf("python-batch%d", batch)
		}
		b.Run(name+"/queue", func(b *testing.B) { benchPython(b, batch, "db") })
		b.Run(name+"/memory", func(b *testing.B) { benchPython(b, batch, "memory") })
	}
}

// benchConfig mirrors config() in bindings/python/bench.py.
func benchConfig(queue string, buffer int) string {
	return fmt.Sprintf(`
[worker.mpsc_channels.handler_dispatch]
completion_buffer_size = %[2]d
max_concurrent_handlers = %[3]d
[worker.mpsc_channels.ffi_dispatch]
dispatch_buffer_size = %[2]d
completion_timeout_ms = 600000
starvation_warning_threshold_ms = 300000
[worker.load_shedding]
warning_threshold_percent = 100
refuse_threshold_percent = 100
[worker.queue]
namespaces = [%[1]q]
batch_size = 10000
poll_interval_ms = 10
visibility_timeout_ms = 600000
[worker.drain]
timeout_ms = 30000
[worker.http]
listen_address = "127.0.0.1:0"
`, queue, buffer, min(buffer, 100000))
}

var (
	cBenchOnce sync.Once
	cBenchBin  string
	cBenchErr  error

	memLibOnce sync.Once
	memLib     string
	memBench   string
	memLibErr  error
)

// buildCBench compiles bindings/c/roundtrip_bench.c against the library.
func buildCBench(b *testing.B) string {
	cBenchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "roundtrip-bench")
		if err != nil {
			cBenchErr = err
			return
		}
		cBenchBin = filepath.Join(dir, "roundtrip_bench")
		cBenchErr = compileCBench(cBenchBin, libPath)
	})
	if cBenchErr != nil {
		b.Fatal(cBenchErr)
	}
	return cBenchBin
}

// buildMemoryBench builds the library with its DB-free source (-tags
// ffibench) and the C program against it.
func buildMemoryBench(b *testing.B) (lib, bin string) {
	memLibOnce.Do(func() {
		dir, err := os.MkdirTemp("", "roundtrip-bench-memory")
		if err != nil {
			memLibErr = err
			return
		}
		memLib = filepath.Join(dir, "libtaskerworker.so")
		cmd := exec.Command("go", "build", "-tags", "ffibench", "-buildmode=c-shared", "-o", memLib, "./cmd/libtaskerworker")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			memLibErr = fmt.Errorf("go build -tags ffibench: %v\n%s", err, out)
			return
		}
		memBench = filepath.Join(dir, "roundtrip_bench")
		memLibErr = compileCBench(memBench, memLib)
	})
	if memLibErr != nil {
		b.Fatal(memLibErr)
	}
	return memLib, memBench
}

func compileCBench(bin, lib string) error {
	cmd := exec.Command("gcc", "-O2", "-Wall", "-o", bin, filepath.Join(repoRoot, "bindings", "c", "roundtrip_bench.c"),
		"-I", filepath.Join(repoRoot, "cmd", "libtaskerworker"), lib, "-Wl,-rpath,"+filepath.Dir(lib))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gcc: %v\n%s", err, out)
	}
	return nil
}

func benchEnv(dsn string) []string {
	env := append(os.Environ(), "DATABASE_URL="+dsn, "TASKERWORKER_LIB="+libPath, "TASKER_WORKER_BIN="+workerBin)
	if os.Getenv("TASKER_LOG_LEVEL") == "" {
		env = append(env, "TASKER_LOG_LEVEL=warn")
	}
	return env
}

func runBench(b *testing.B, env []string, name string, args ...string) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = repoRoot
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
	}
	return out.String()
}

// resultLines parses "RESULT path=X k=v ..." lines by path.
func resultLines(b *testing.B, out string) map[string]map[string]float64 {
	b.Helper()
	res := map[string]map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "RESULT" {
			continue
		}
		kv := map[string]float64{}
		path := ""
		for _, p := range f[1:] {
			k, v, _ := strings.Cut(p, "=")
			switch k {
			case "path":
				path = v
				continue
			case "source":
				continue // text; the caller chose it
			}
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("bad RESULT field %q in %q", p, sc.Text())
			}
			kv[k] = x
		}
		res[path] = kv
	}
	if len(res) == 0 {
		b.Fatalf("no RESULT line in:\n%s", out)
	}
	return res
}

func report(b *testing.B, prefix string, r map[string]float64) {
	b.Helper()
	if prefix == "" {
		b.ReportMetric(r["mean_us"]*1000, "ns/op")
	}
	b.ReportMetric(r["p50_us"], prefix+"p50-µs")
	b.ReportMetric(r["p99_us"], prefix+"p99-µs")
	b.ReportMetric(r["events_per_s"], prefix+"events/s")
}

func benchC(b *testing.B, batch int) {
	bin := buildCBench(b)
	dsn := pgtest.NewDatabase(b)
	env := benchEnv(dsn)
	queue := "bench_c"
	runBench(b, env, workerBin, "migrate")
	runBench(b, env, workerBin, "enqueue", "--queue", queue, "--handler", "noop", "--count", strconv.Itoa(b.N))
	b.ResetTimer()
	out := runBench(b, env, bin, benchConfig(queue, 100000), strconv.Itoa(b.N), strconv.Itoa(batch))
	b.StopTimer()
	report(b, "", onlyResult(b, out))
}

func benchCMemory(b *testing.B, batch int) {
	_, bin := buildMemoryBench(b)
	b.ResetTimer()
	out := runBench(b, os.Environ(), bin, "memory", strconv.Itoa(b.N), strconv.Itoa(batch))
	b.StopTimer()
	report(b, "", onlyResult(b, out))
}

// onlyResult is the single RESULT line of the C program.
func onlyResult(b *testing.B, out string) map[string]float64 {
	b.Helper()
	res := resultLines(b, out)
	if len(res) != 1 {
		b.Fatalf("want one RESULT line:\n%s", out)
	}
	for _, r := range res {
		return r
	}
	return nil
}

func benchPython(b *testing.B, batch int, source string) {
	if _, err := exec.LookPath("python3"); err != nil {
		b.Fatalf("python3 not on PATH: %v", err)
	}
	args := []string{filepath.Join(repoRoot, "bindings", "python", "bench.py"),
		"--count", strconv.Itoa(max(2*b.N, 2*batch)), "--source", source}
	if batch > 1 {
		args = append(args, "--batch", strconv.Itoa(batch))
	}
	var env []string
	if source == "memory" {
		lib, _ := buildMemoryBench(b)
		env = append(os.Environ(), "TASKERWORKER_LIB="+lib)
		args = append(args, "--lib", lib)
	} else {
		env = benchEnv(pgtest.NewDatabase(b))
		args = append(args, "--queue", "bench_py", "--worker-bin", workerBin)
	}
	b.ResetTimer()
	out := runBench(b, env, "python3", args...)
	b.StopTimer()
	r := resultLines(b, out)
	report(b, "", r["binding"])
	report(b, "raw-", r["raw"])
}
