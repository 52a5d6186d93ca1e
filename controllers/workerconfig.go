package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	workersv1alpha1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
)

// workerConfig turns a pool's spec into the worker.toml the pods read. It
// uses the worker's own config type and its Validate, so a spec the worker
// would refuse is caught here, named, before a pod crash-loops on it.
func workerConfig(pool *workersv1alpha1.WorkerPool) (config.Config, error) {
	s := pool.Spec
	cfg := config.Default()
	var errs []error
	millis := func(field string, d workersv1alpha1.Duration, into *int64) {
		if d == "" {
			return // left at the worker's default
		}
		v, err := time.ParseDuration(string(d))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a duration such as 30s or 500ms", field, d))
			return
		}
		if v%time.Millisecond != 0 {
			errs = append(errs, fmt.Errorf("%s: %q must be a whole number of milliseconds", field, d))
			return
		}
		*into = v.Milliseconds()
	}
	positive := func(v int32, into *int) {
		if v > 0 {
			*into = int(v)
		}
	}

	if len(s.Queue.Namespaces) > 0 {
		cfg.Worker.Queue.Namespaces = make([]string, len(s.Queue.Namespaces))
		for i, n := range s.Queue.Namespaces {
			cfg.Worker.Queue.Namespaces[i] = string(n)
		}
	}
	millis("spec.queue.visibilityTimeout", s.Queue.VisibilityTimeout, &cfg.Worker.Queue.VisibilityTimeoutMS)
	millis("spec.queue.pollInterval", s.Queue.PollInterval, &cfg.Worker.Queue.PollIntervalMS)
	positive(s.Queue.BatchSize, &cfg.Worker.Queue.BatchSize)

	hd := &cfg.Worker.MPSCChannels.HandlerDispatch
	positive(s.Dispatch.DispatchBufferSize, &hd.DispatchBufferSize)
	positive(s.Dispatch.CompletionBufferSize, &hd.CompletionBufferSize)
	positive(s.Dispatch.MaxConcurrentHandlers, &hd.MaxConcurrentHandlers)
	millis("spec.dispatch.handlerTimeout", s.Dispatch.HandlerTimeout, &hd.HandlerTimeoutMS)
	millis("spec.dispatch.completionSendTimeout", s.Dispatch.CompletionSendTimeout, &hd.CompletionSendTimeoutMS)
	if s.Dispatch.SaturationWarningPercent > 0 {
		hd.SaturationWarningThreshold = float64(s.Dispatch.SaturationWarningPercent) / 100
	}
	if s.Dispatch.SaturationCriticalPercent > 0 {
		hd.SaturationCriticalThreshold = float64(s.Dispatch.SaturationCriticalPercent) / 100
	}

	fd := &cfg.Worker.MPSCChannels.FFIDispatch
	fd.Enabled = s.FFI.Enabled
	positive(s.FFI.DispatchBufferSize, &fd.DispatchBufferSize)
	millis("spec.ffi.completionTimeout", s.FFI.CompletionTimeout, &fd.CompletionTimeoutMS)
	millis("spec.ffi.starvationWarningThreshold", s.FFI.StarvationWarningThreshold, &fd.StarvationWarningThresholdMS)
	millis("spec.ffi.callbackTimeout", s.FFI.CallbackTimeout, &fd.CallbackTimeoutMS)
	if s.FFI.CallbackStrategy != "" {
		fd.CallbackStrategy = config.CallbackStrategy(s.FFI.CallbackStrategy)
	}
	millis("spec.drain.timeout", s.Drain.Timeout, &cfg.Worker.Drain.TimeoutMS)

	if len(errs) > 0 {
		return config.Config{}, errors.Join(errs...)
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, fmt.Errorf("worker.toml rendered from the spec would be refused by the worker: %w", err)
	}
	return cfg, nil
}

// renderWorkerConfig returns worker.toml for the pool and the hash that goes
// on the pod template, so that the pods roll exactly when the file changes.
func renderWorkerConfig(pool *workersv1alpha1.WorkerPool) (toml string, hash string, err error) {
	cfg, err := workerConfig(pool)
	if err != nil {
		return "", "", err
	}
	data, err := cfg.Render()
	if err != nil {
		return "", "", fmt.Errorf("render worker.toml: %w", err)
	}
	sum := sha256.Sum256(data)
	return string(data), hex.EncodeToString(sum[:8]), nil
}
