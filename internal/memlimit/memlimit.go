package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitShare is the part of the container's memory limit the Go
// runtime aims to stay under: the rest is for what the runtime does not
// count (thread stacks, the binary, memory freed but not yet returned).
const memoryLimitShare = 0.9

// setMemoryLimit gives the Go runtime a soft memory limit of 90 % of the
// container's memory limit, unless GOMEMLIMIT says otherwise, and returns
// it (0: none set). Without it the garbage collector lets the heap grow to
// twice what is live before it collects: with thousands of pools in the
// informer caches that is the difference between fitting the container's
// limit and being killed for exceeding it. The limit is soft: a live heap
// larger than it still grows (and the collector then runs more often).
func setMemoryLimit(cgroupRoot string) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0 // the runtime read it at start
	}
	limit, ok := containerMemoryLimit(cgroupRoot)
	if !ok {
		return 0
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	return soft
}

// containerMemoryLimit reads the memory limit of the cgroup the process
// runs in, mounted at root (/sys/fs/cgroup in a container): cgroup v2's
// memory.max, else cgroup v1's memory/memory.limit_in_bytes. No limit ("max",
// or v1's page-rounded maximum) reports false.
func containerMemoryLimit(root string) (int64, bool) {
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
