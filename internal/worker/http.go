package worker

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics, /healthz (the process is alive) and /readyz (the
// queue is reachable and dispatch is running; 503 while draining, so the pod
// leaves its Service before it stops, and 503 while FFI events wait and no
// foreign poller has polled for longer than the starvation threshold, so a
// pod whose pollers died is noticed) and /livez (503 once such a stall lasts
// longer than the completion timeout, for a liveness probe to restart the
// pod).
func (w *Worker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{Registry: w.reg}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/livez", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if reason := w.notLive(); reason != "" {
			rw.WriteHeader(http.StatusServiceUnavailable)
			_, _ = rw.Write([]byte(reason + "\n"))
			return
		}
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if reason := w.notReady(r.Context()); reason != "" {
			rw.WriteHeader(http.StatusServiceUnavailable)
			_, _ = rw.Write([]byte(reason + "\n"))
			return
		}
		_, _ = rw.Write([]byte("ok\n"))
	})
	return mux
}

// notLive says why the worker should be restarted, or "": only when FFI
// events wait and no foreign poller has polled for longer than the
// completion timeout, by which time any event a live poller held would have
// timed out: the pollers are dead, and a restart is the way out. A database
// outage or a drain never makes the worker not live.
func (w *Worker) notLive() string {
	if w.ffi == nil {
		return ""
	}
	limit := w.cfg.Worker.MPSCChannels.FFIDispatch.CompletionTimeout()
	if st, _ := w.ffi.Stalled(); st.Waiting > 0 && st.SinceLastPoll > limit {
		return fmt.Sprintf("FFI pollers dead: no poll for %s while %d events wait (completion_timeout_ms %d)",
			st.SinceLastPoll.Round(time.Millisecond), st.Waiting, limit.Milliseconds())
	}
	return ""
}

// notReady says why the worker should not receive traffic, or "".
func (w *Worker) notReady(ctx context.Context) string {
	switch {
	case w.draining.Load():
		return "draining"
	case !w.started.Load():
		return "starting"
	}
	if w.ffi != nil {
		if st, stalled := w.ffi.Stalled(); stalled {
			return fmt.Sprintf("FFI pollers stalled: no poll for %s while %d events wait (starvation_warning_threshold_ms %d)",
				st.SinceLastPoll.Round(time.Millisecond), st.Waiting, w.cfg.Worker.MPSCChannels.FFIDispatch.StarvationWarningThresholdMS)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := w.pool.Ping(ctx); err != nil {
		return "queue database unreachable: " + err.Error()
	}
	return ""
}
