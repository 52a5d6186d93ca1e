// Package memlimit sets the Go runtime's soft memory limit from the memory
// limit of the container the process runs in.
package memlimit

import (
	"debug/elf"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// Share is the part of the container's memory limit, less the
// binary's mapped code (see ForContainer), the Go runtime aims to stay
// under: the rest is headroom for what it does not count exactly (memory
// freed but not yet returned, the C side of the process).
const Share = 0.9

// Set gives the Go runtime a soft memory limit derived from the
// container's (ForContainer), unless GOMEMLIMIT says otherwise, and
// returns it and the code size it left room for (0: none set). Without it
// the garbage collector lets the heap grow to twice what is live before it
// collects: with thousands of pools in the informer caches that is the
// difference between fitting the container's limit and being killed for
// exceeding it. The limit is soft: a live heap larger than it still grows
// (and the collector then runs more often).
func Set(cgroupRoot, executable string) (soft, code int64) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0, 0 // the runtime read it at start
	}
	limit, ok := containerLimit(cgroupRoot)
	if !ok {
		return 0, 0
	}
	code = MappedCodeSize(executable)
	soft = ForContainer(limit, code)
	debug.SetMemoryLimit(soft)
	return soft, code
}

// ForContainer is the Go runtime's share of a container memory limit. The
// runtime's limit counts only the memory it allocates, but the container's
// also counts the pages of the binary's code and read-only data the kernel
// maps in as the process runs (about 47 MiB of the operator's 58 MiB when it
// serves 10 000 pools): those come off the limit first, and the runtime
// gets Share of the rest. It never gets less than half the
// limit, where a collector held far below the live heap would only burn
// CPU time.
func ForContainer(limit, code int64) int64 {
	return max(int64(float64(limit-code)*Share), limit/2)
}

// MappedCodeSize is the size of the read-only segments the kernel maps
// from the executable (code, read-only data, the function tables the
// runtime reads to walk stacks), 0 if it cannot be read.
func MappedCodeSize(executable string) int64 {
	f, err := elf.Open(executable)
	if err != nil {
		return 0
	}
	defer f.Close()
	var size int64
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_W == 0 {
			size += int64(p.Filesz)
		}
	}
	return size
}

// containerLimit reads the memory limit of the cgroup the process
// runs in, mounted at root (/sys/fs/cgroup in a container): cgroup v2's
// memory.max, else cgroup v1's memory/memory.limit_in_bytes. No limit ("max",
// or v1's page-rounded maximum) reports false.
func containerLimit(root string) (int64, bool) {
	for _, file := range []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}
