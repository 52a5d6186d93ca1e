//go:build linux

// Command pause is the sandbox ("infra") container of the local cluster's pods
// (containerd's sandbox_image): nothing can be pulled here, so the usual
// registry.k8s.io/pause image is replaced by this static program, imported
// from bin/images by hack/cluster/import.sh. As PID 1 of the pod it reaps
// orphaned children and exits 0 on SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
