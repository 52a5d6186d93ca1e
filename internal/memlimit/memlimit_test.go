package memlimit

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestContainerMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		want                int64
		ok                  bool
	}{
		{"cgroup v2 limit", "memory.max", "268435456\n", 268435456, true},
		{"cgroup v2 no limit", "memory.max", "max\n", 0, false},
		{"cgroup v1 limit", "memory/memory.limit_in_bytes", "536870912\n", 536870912, true},
		{"cgroup v1 no limit", "memory/memory.limit_in_bytes", "9223372036854771712\n", 0, false},
		{"garbage", "memory.max", "lots\n", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			path := filepath.Join(root, tc.file)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if got, ok := containerLimit(root); got != tc.want || ok != tc.ok {
				t.Fatalf("containerLimit = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	if _, ok := containerLimit(t.TempDir()); ok {
		t.Fatal("a limit found where no cgroup file is")
	}
}

func TestSetMemoryLimitFromTheContainer(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("268435456\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const limit = 268435456
	soft, code := Set(root, exe)
	if code <= 0 {
		t.Fatalf("the test binary's mapped code size is %d, want more than 0", code)
	}
	if want := ForContainer(limit, code); soft != want || soft >= limit*9/10 {
		t.Fatalf("Set = %d, want %d: 90%% of the limit less %d bytes of code", soft, want, code)
	}
	if got := debug.SetMemoryLimit(-1); got != soft {
		t.Fatalf("the runtime's memory limit is %d, want %d", got, soft)
	}
	t.Setenv("GOMEMLIMIT", "100MiB")
	if got, _ := Set(root, exe); got != 0 {
		t.Fatalf("with GOMEMLIMIT set, Set set %d", got)
	}
}

func TestGoMemoryLimitLeavesRoomForTheCode(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct{ limit, code, want int64 }{
		{300 * mib, 58 * mib, 242 * mib * 9 / 10}, // 300 MiB container: 217.8 MiB for Go
		{256 * mib, 0, 256 * mib * 9 / 10},        // code size unknown
		{100 * mib, 58 * mib, 50 * mib},           // never below half the limit
	} {
		if got := ForContainer(tc.limit, tc.code); got != tc.want {
			t.Errorf("ForContainer(%d MiB, %d MiB) = %d, want %d", tc.limit/mib, tc.code/mib, got, tc.want)
		}
	}
	if MappedCodeSize("/no/such/file") != 0 {
		t.Error("a code size for a file that does not exist")
	}
}
