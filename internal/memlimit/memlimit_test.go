package main

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
			if got, ok := containerMemoryLimit(root); got != tc.want || ok != tc.ok {
				t.Fatalf("containerMemoryLimit = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	if _, ok := containerMemoryLimit(t.TempDir()); ok {
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
	limit := 268435456.0
	want := int64(limit * memoryLimitShare)
	if got := setMemoryLimit(root); got != want {
		t.Fatalf("setMemoryLimit = %d, want 90%% of the limit, %d", got, want)
	}
	if got := debug.SetMemoryLimit(-1); got != want {
		t.Fatalf("the runtime's memory limit is %d, want %d", got, want)
	}
	t.Setenv("GOMEMLIMIT", "100MiB")
	if got := setMemoryLimit(root); got != 0 {
		t.Fatalf("with GOMEMLIMIT set, setMemoryLimit set %d", got)
	}
}
