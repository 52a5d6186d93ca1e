package controllers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/ffi"
	"github.com/seed-a17b38e7/workerpool-operator/internal/worker"
)

// The scraper is tested against real HTTP servers on loopback serving pages
// that the worker's own metric constructors produced, so a rename on either
// side breaks these tests.

// operatorMetrics are the families the operator reads (ARCHITECTURE.md).
var operatorMetrics = []string{
	metricInFlight, metricCapacity, metricSaturation, metricPending,
	metricOldestAge, metricStarving, metricCallbackTimeouts, metricSemaphoreFailures,
}

// scrWorkerConfig is a valid worker.toml for a worker built without a
// database: queue calls are never made because the worker is not run.
func scrWorkerConfig(capacity int, ffiEnabled bool) config.Config {
	cfg := config.Default()
	cfg.Worker.WorkerID = "scrape-test"
	cfg.Worker.MPSCChannels.HandlerDispatch.MaxConcurrentHandlers = capacity
	cfg.Worker.MPSCChannels.FFIDispatch.Enabled = ffiEnabled
	return cfg
}

// scrNewRealWorker assembles the real tasker-worker (worker.New: queue,
// dispatch core, FFI channel, Go and process collectors, /metrics handler)
// on ln without running it. Its database is never reached: the pool
// connects lazily and nothing here touches the queue.
func scrNewRealWorker(tb testing.TB, ln net.Listener, capacity int, ffiEnabled bool) *worker.Worker {
	tb.Helper()
	w, err := worker.New(context.Background(), worker.Options{
		Config:      scrWorkerConfig(capacity, ffiEnabled),
		DatabaseURL: "postgres://scrape-test@127.0.0.1:1/none?connect_timeout=1",
		Listener:    ln,
		Logger:      logr.Discard(),
		Version:     "scrape-test",
	})
	if err != nil {
		tb.Fatalf("assemble the real worker: %v", err)
	}
	tb.Cleanup(w.Queue().Pool().Close)
	return w
}

// scrServeOn serves h on ln until the test ends.
func scrServeOn(tb testing.TB, ln net.Listener, h http.Handler) string {
	tb.Helper()
	srv := httptest.NewUnstartedServer(h)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	tb.Cleanup(srv.Close)
	return srv.URL
}

func scrServe(tb testing.TB, h http.Handler) string {
	tb.Helper()
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv.URL
}

// scrTextOnly forces the text exposition whatever the scraper accepts.
func scrTextOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.Clone(r.Context())
		r.Header.Set("Accept", "text/plain;version=0.0.4")
		h.ServeHTTP(w, r)
	})
}

// scrContentTypes records what Content-Type each response went out with.
type scrContentTypes struct {
	h  http.Handler
	mu sync.Mutex
	ct []string
}

func (c *scrContentTypes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.h.ServeHTTP(w, r)
	c.mu.Lock()
	c.ct = append(c.ct, w.Header().Get("Content-Type"))
	c.mu.Unlock()
}

func (c *scrContentTypes) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ct...)
}

// scrSnapshot freezes a registry's families, so two expositions of it carry
// the same values even for time-based gauges such as the FFI event age.
func scrSnapshot(tb testing.TB, g prometheus.Gatherer) prometheus.Gatherer {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return mfs, nil })
}

func scrFamilyValue(tb testing.TB, g prometheus.Gatherer, name string) float64 {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			if len(mf.GetMetric()) != 1 {
				tb.Fatalf("%s has %d series, want 1", name, len(mf.GetMetric()))
			}
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	tb.Fatalf("no family %s", name)
	return 0
}

func scrScrapeOne(tb testing.TB, s *Scraper, url string) (*podSample, error) {
	tb.Helper()
	samples, errs := s.ScrapeAll(context.Background(), []scrapeTarget{{Pod: "pod-0", URL: url}})
	if len(samples) != 1 || len(errs) != 1 {
		tb.Fatalf("ScrapeAll returned %d samples and %d errors for 1 target", len(samples), len(errs))
	}
	if (samples[0] == nil) == (errs[0] == nil) {
		tb.Fatalf("want exactly one of sample and error, got %+v and %v", samples[0], errs[0])
	}
	return samples[0], errs[0]
}

// scrWorkerState is a registry assembled from the worker's constructors as
// internal/worker does, with state the test sets.
type scrWorkerState struct {
	reg        *prometheus.Registry
	metrics    *dispatch.Metrics
	sem        *dispatch.Semaphore
	completion chan *dispatch.Completion
	dispatchCh chan dispatch.StepMessage
	ffi        *ffi.Channel
}

// scrNewWorkerState registers dispatch counters, the dispatch gauges
// (unless withoutDispatchGauges), the channel monitors and the FFI channel,
// plus the Go and process collectors the worker also serves.
func scrNewWorkerState(tb testing.TB, capacity int, withoutDispatchGauges bool) *scrWorkerState {
	tb.Helper()
	st := &scrWorkerState{
		reg:        prometheus.NewRegistry(),
		sem:        dispatch.NewSemaphore(capacity),
		completion: make(chan *dispatch.Completion, 10),
		dispatchCh: make(chan dispatch.StepMessage, 16),
	}
	var err error
	if st.metrics, err = dispatch.NewMetrics(st.reg); err != nil {
		tb.Fatal(err)
	}
	svc := dispatch.NewHandlerDispatchService(dispatch.ServiceConfig{MaxConcurrentHandlers: capacity, Semaphore: st.sem},
		dispatch.NewRegistry(), st.dispatchCh, st.completion, st.metrics, logr.Discard())
	if !withoutDispatchGauges {
		if err := svc.RegisterMetrics(st.reg); err != nil {
			tb.Fatal(err)
		}
	}
	// A threshold of 1ns makes every polled event starving by the time the
	// registry is gathered, so the count is known.
	st.ffi = ffi.New(ffi.Config{WorkerID: "scrape-test", StarvationWarningThreshold: time.Nanosecond},
		st.dispatchCh, st.completion, st.metrics, logr.Discard())
	if err := st.ffi.RegisterMetrics(st.reg); err != nil {
		tb.Fatal(err)
	}
	for _, mon := range []*dispatch.ChannelMonitor{
		dispatch.NewChannelMonitor("dispatch", func() int { return len(st.dispatchCh) }, cap(st.dispatchCh), 0.8, 0.95, logr.Discard()),
		dispatch.NewChannelMonitor("completion", func() int { return len(st.completion) }, cap(st.completion), 0.8, 0.95, logr.Discard()),
	} {
		if err := mon.Register(st.reg); err != nil {
			tb.Fatal(err)
		}
	}
	st.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return st
}

// The real worker (worker.New, its registry and its /metrics handler)
// exports every family the operator reads, and the operator reads its page
// as an idle pod with the configured capacity, with or without FFI.
func TestScrapeReadsTheRealWorkerPage(t *testing.T) {
	for _, ffiEnabled := range []bool{true, false} {
		t.Run(fmt.Sprintf("ffi=%v", ffiEnabled), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			w := scrNewRealWorker(t, ln, 7, ffiEnabled)
			url := scrServeOn(t, ln, w.Handler()) + "/metrics"

			mfs, err := w.Registry().Gather()
			if err != nil {
				t.Fatal(err)
			}
			exported := map[string]bool{}
			for _, mf := range mfs {
				exported[mf.GetName()] = true
			}
			for _, name := range operatorMetrics {
				isFFI := strings.HasPrefix(name, "tasker_ffi_")
				if exported[name] != (ffiEnabled || !isFFI) {
					t.Errorf("worker exports %s: %v (ffi enabled: %v)", name, exported[name], ffiEnabled)
				}
			}

			got, err := scrScrapeOne(t, NewScraper(5*time.Second, 4), url)
			if err != nil {
				t.Fatalf("scrape the real worker: %v", err)
			}
			if ffiEnabled && got.LastPollAgeMs <= 0 {
				t.Errorf("an FFI worker that nobody polled reports its last poll %v ms ago", got.LastPollAgeMs)
			}
			got.LastPollAgeMs = 0 // time since the worker started: not a fixed figure
			if want := (podSample{Capacity: 7}); *got != want {
				t.Fatalf("idle worker read as %+v, want %+v", *got, want)
			}
		})
	}
}

// A page built by the worker's own constructors, with every figure the
// operator reads set to a distinct value, reads the same through the
// protobuf exposition (what the scraper asks for) and the text one.
func TestScrapeProtobufAndTextGiveTheSameSample(t *testing.T) {
	st := scrNewWorkerState(t, 8, false)
	ctx := context.Background()
	for range 3 { // 3 handlers running
		if _, err := st.sem.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 { // completion channel 4/10 full
		st.completion <- &dispatch.Completion{}
	}
	for i := range 2 { // 2 events polled by a foreign handler, not completed
		st.dispatchCh <- dispatch.StepMessage{EventID: fmt.Sprintf("ev-%d", i), StepUUID: fmt.Sprintf("step-%d", i), Handler: "noop"}
		if _, ok := st.ffi.Poll(); !ok {
			t.Fatal("poll found no event")
		}
	}
	st.metrics.CallbackTimeouts.Add(5)
	st.metrics.SemaphoreFailures.Add(6)
	st.metrics.StepsCompleted(dispatch.OutcomeSuccess).Add(100) // read by nobody, present on the page

	snap := scrSnapshot(t, st.reg)
	want := podSample{
		InFlight: 3, Capacity: 8, CompletionSaturation: 0.4,
		PendingEvents: 2, StarvingEvents: 2,
		OldestPendingAgeMs: scrFamilyValue(t, snap, metricOldestAge),
		LastPollAgeMs:      scrFamilyValue(t, snap, metricLastPoll),
		CallbackTimeouts:   5, SemaphoreFailures: 6,
	}

	page := promhttp.HandlerFor(snap, promhttp.HandlerOpts{})
	negotiated := &scrContentTypes{h: page}
	textOnly := &scrContentTypes{h: scrTextOnly(page)}
	s := NewScraper(5*time.Second, 4)
	samples, errs := s.ScrapeAll(ctx, []scrapeTarget{
		{Pod: "negotiated", URL: scrServe(t, negotiated) + "/metrics"},
		{Pod: "text", URL: scrServe(t, textOnly) + "/metrics"},
	})
	for i, name := range []string{"negotiated", "text-only"} {
		if errs[i] != nil {
			t.Fatalf("%s: %v", name, errs[i])
		}
		if *samples[i] != want {
			t.Errorf("%s page read as\n%+v, want\n%+v", name, *samples[i], want)
		}
	}
	if ct := negotiated.all(); len(ct) != 1 || !strings.HasPrefix(ct[0], "application/vnd.google.protobuf") {
		t.Errorf("negotiated response Content-Type %q, want the protobuf exposition", ct)
	}
	if ct := textOnly.all(); len(ct) != 1 || !strings.HasPrefix(ct[0], "text/plain") {
		t.Errorf("text-only response Content-Type %q, want text/plain", ct)
	}
}

// A page without tasker_dispatch_capacity is not a worker's: refused, with
// the missing family named, rather than read as an idle pod.
func TestScrapeRefusesAPageWithoutCapacity(t *testing.T) {
	st := scrNewWorkerState(t, 8, true) // everything but the dispatch gauges
	pages := map[string]http.Handler{
		"protobuf": promhttp.HandlerFor(st.reg, promhttp.HandlerOpts{}),
		"text":     scrTextOnly(promhttp.HandlerFor(st.reg, promhttp.HandlerOpts{})),
		"empty": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		}),
	}
	for name, h := range pages {
		t.Run(name, func(t *testing.T) {
			_, err := scrScrapeOne(t, NewScraper(5*time.Second, 1), scrServe(t, h)+"/metrics")
			if err == nil || !strings.Contains(err.Error(), "no "+metricCapacity) {
				t.Fatalf("error %v, want one naming %s", err, metricCapacity)
			}
		})
	}
	// Something that is not a metrics page at all fails too.
	html := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html><body>hello</body></html>\n")
	})
	if _, err := scrScrapeOne(t, NewScraper(5*time.Second, 1), scrServe(t, html)+"/metrics"); err == nil {
		t.Fatal("an HTML page was accepted as a worker's metrics")
	}
}

func TestScrapeHTTPErrorNamesTheStatus(t *testing.T) {
	for _, code := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusNotFound} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			url := scrServe(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				// A body that parses as a worker page must not rescue a failed request.
				w.WriteHeader(code)
				_, _ = io.WriteString(w, metricCapacity+" 10\n")
			})) + "/metrics"
			_, err := scrScrapeOne(t, NewScraper(5*time.Second, 1), url)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("HTTP %d", code)) || !strings.Contains(err.Error(), url) {
				t.Fatalf("error %v, want one naming HTTP %d and %s", err, code, url)
			}
		})
	}
}

// A pod that accepts the connection but never answers, or answers the
// headers and then stalls, fails after the scrape timeout, not later.
func TestScrapeTimeoutWithinTheDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const deadline = timeout + 5*time.Second

	// Never answers: the kernel completes the handshake (listen backlog)
	// and takes the request, but nothing ever reads it.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Close() })

	// Sends the headers and a first line, then stalls until the client leaves.
	stalled := scrServe(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, metricCapacity+" 10\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))

	for _, c := range []struct{ name, url, want string }{
		{"silent", "http://" + silent.Addr().String() + "/metrics", "no answer within 300ms"},
		{"stalled body", stalled + "/metrics", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewScraper(timeout, 1)
			type result struct {
				samples []*podSample
				errs    []error
			}
			done := make(chan result, 1)
			start := time.Now()
			go func() {
				samples, errs := s.ScrapeAll(context.Background(), []scrapeTarget{{Pod: "p", URL: c.url}})
				done <- result{samples, errs}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(deadline):
				t.Fatalf("no result within %s for a %s scrape timeout", deadline, timeout)
			}
			elapsed := time.Since(start)
			if r.samples[0] != nil || r.errs[0] == nil {
				t.Fatalf("got sample %+v, error %v; want a timeout error", r.samples[0], r.errs[0])
			}
			if !strings.Contains(r.errs[0].Error(), c.url) || !strings.Contains(r.errs[0].Error(), c.want) {
				t.Errorf("error %q, want it to name %s and contain %q", r.errs[0], c.url, c.want)
			}
			if elapsed < timeout {
				t.Errorf("gave up after %s, before the %s timeout", elapsed, timeout)
			}
		})
	}
}

// NaN and infinities (a broken exporter) count as 0, through both
// expositions; the page is still a worker's.
func TestParseSampleNaNAndInfCountAsZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	for name, v := range map[string]float64{
		metricInFlight: math.NaN(), metricCapacity: 4, metricSaturation: math.NaN(),
		metricPending: math.Inf(1), metricOldestAge: math.NaN(), metricStarving: math.Inf(-1),
	} {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: name})
		g.Set(v)
		reg.MustRegister(g)
	}
	for _, name := range []string{metricCallbackTimeouts, metricSemaphoreFailures} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: name}, math.NaN))
	}
	text := "# TYPE tasker_dispatch_in_flight gauge\ntasker_dispatch_in_flight NaN\n" +
		"tasker_dispatch_capacity 4\n" + // untyped
		"# TYPE tasker_channel_completion_saturation gauge\ntasker_channel_completion_saturation NaN\n" +
		"# TYPE tasker_ffi_pending_events gauge\ntasker_ffi_pending_events +Inf\n" +
		"# TYPE tasker_ffi_oldest_event_age_ms gauge\ntasker_ffi_oldest_event_age_ms NaN\n" +
		"# TYPE tasker_ffi_starving_events gauge\ntasker_ffi_starving_events -Inf\n" +
		"# TYPE tasker_callback_timeouts_total counter\ntasker_callback_timeouts_total NaN\n" +
		"# TYPE tasker_semaphore_acquisition_failures_total counter\ntasker_semaphore_acquisition_failures_total +Inf\n"
	pages := map[string]http.Handler{
		"protobuf": promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		"text": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			_, _ = io.WriteString(w, text)
		}),
	}
	for name, h := range pages {
		t.Run(name, func(t *testing.T) {
			got, err := scrScrapeOne(t, NewScraper(5*time.Second, 1), scrServe(t, h)+"/metrics")
			if err != nil {
				t.Fatal(err)
			}
			if want := (podSample{Capacity: 4}); *got != want {
				t.Fatalf("read %+v, want %+v", *got, want)
			}
		})
	}
}

// A runtime embedding several channels exposes several series per family:
// counts add up, the saturation and the oldest age take the worst series.
func TestParseSampleMultipleSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	series := map[string][2]float64{ // channel="a", channel="b"
		metricInFlight:   {2, 3},
		metricCapacity:   {8, 4},
		metricSaturation: {0.75, 0.25}, // the worst first: max, not last
		metricPending:    {1, 6},
		metricOldestAge:  {250, 1500},
		metricStarving:   {1, 2},
	}
	for name, v := range series {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: name}, []string{"channel"})
		g.WithLabelValues("a").Set(v[0])
		g.WithLabelValues("b").Set(v[1])
		reg.MustRegister(g)
	}
	for name, v := range map[string][2]float64{metricCallbackTimeouts: {4, 1}, metricSemaphoreFailures: {2, 9}} {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: name}, []string{"channel"})
		c.WithLabelValues("a").Add(v[0])
		c.WithLabelValues("b").Add(v[1])
		reg.MustRegister(c)
	}
	want := podSample{
		InFlight: 5, Capacity: 12, CompletionSaturation: 0.75, PendingEvents: 7,
		OldestPendingAgeMs: 1500, StarvingEvents: 3, CallbackTimeouts: 5, SemaphoreFailures: 11,
	}
	page := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	for name, h := range map[string]http.Handler{"protobuf": page, "text": scrTextOnly(page)} {
		t.Run(name, func(t *testing.T) {
			got, err := scrScrapeOne(t, NewScraper(5*time.Second, 1), scrServe(t, h)+"/metrics")
			if err != nil {
				t.Fatal(err)
			}
			if *got != want {
				t.Fatalf("read\n%+v, want\n%+v", *got, want)
			}
		})
	}
}

// scrGate is a server whose requests block until the test releases them,
// counting how many are in flight at once.
type scrGate struct {
	inFlight, peak, served atomic.Int64
	arrived                chan scrArrival
	stop                   chan struct{} // closed at the end of the test: unblocks every request
}

type scrArrival struct {
	index   int
	release chan struct{}
}

// scrServeGate serves a gate until the test ends; requests still blocked
// then (the test failed) are let go before the server closes.
func scrServeGate(tb testing.TB, buffer int) (*scrGate, string) {
	g := &scrGate{arrived: make(chan scrArrival, buffer), stop: make(chan struct{})}
	url := scrServe(tb, g)
	tb.Cleanup(func() { close(g.stop) }) // runs before the server's Close
	return g, url
}

// ServeHTTP answers /metrics/N with a worker page of capacity N+1, once released.
func (g *scrGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/metrics/"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	n := g.inFlight.Add(1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	a := scrArrival{index: i, release: make(chan struct{})}
	select {
	case g.arrived <- a:
	case <-g.stop:
	}
	select {
	case <-a.release:
	case <-g.stop:
	case <-r.Context().Done():
	}
	g.inFlight.Add(-1)
	g.served.Add(1)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "%s %d\n", metricCapacity, i+1)
}

func (g *scrGate) next(tb testing.TB, within time.Duration) scrArrival {
	tb.Helper()
	select {
	case a := <-g.arrived:
		return a
	case <-time.After(within):
		tb.Fatalf("no request arrived within %s", within)
		return scrArrival{}
	}
}

// quiet fails if any request arrives within grace: with the bound full,
// none may. (Proving an absence needs a window; a scraper that ignored
// the bound sends the extra requests within a few milliseconds.)
func (g *scrGate) quiet(tb testing.TB, grace time.Duration) {
	tb.Helper()
	select {
	case a := <-g.arrived:
		tb.Fatalf("request for target %d arrived while the bound was full (%d in flight)", a.index, g.inFlight.Load())
	case <-time.After(grace):
	}
}

func scrGateTargets(url string, n int) []scrapeTarget {
	targets := make([]scrapeTarget, n)
	for i := range targets {
		targets[i] = scrapeTarget{Pod: fmt.Sprintf("pod-%d", i), URL: fmt.Sprintf("%s/metrics/%d", url, i)}
	}
	return targets
}

// ScrapeAll never has more than Concurrency requests in flight, reaches the
// bound, and returns the results in the targets' order whatever order the
// pods answer in.
func TestScrapeAllKeepsOrderAndBoundsConcurrency(t *testing.T) {
	const n, limit = 12, 3
	const wait = 10 * time.Second
	gate, url := scrServeGate(t, n)
	s := NewScraper(time.Minute, limit)
	targets := scrGateTargets(url, n)

	type result struct {
		samples []*podSample
		errs    []error
	}
	done := make(chan result, 1)
	go func() {
		samples, errs := s.ScrapeAll(context.Background(), targets)
		done <- result{samples, errs}
	}()

	// Fill the bound, then release the most recent arrival each time (so
	// pods answer out of order): each release lets exactly one more in.
	var blocked []scrArrival
	for range limit {
		blocked = append(blocked, gate.next(t, wait))
	}
	gate.quiet(t, 250*time.Millisecond)
	for started := limit; started < n; started++ {
		if got := gate.inFlight.Load(); got != limit {
			t.Fatalf("%d requests in flight with %d blocked, want %d", got, len(blocked), limit)
		}
		last := blocked[len(blocked)-1]
		blocked = blocked[:len(blocked)-1]
		close(last.release)
		blocked = append(blocked, gate.next(t, wait))
	}
	for len(blocked) > 0 {
		close(blocked[0].release)
		blocked = blocked[1:]
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(wait):
		t.Fatalf("ScrapeAll did not return within %s of the last release", wait)
	}
	if p := gate.peak.Load(); p != limit {
		t.Errorf("peak concurrency %d, want exactly the bound %d", p, limit)
	}
	if got := gate.served.Load(); got != n {
		t.Errorf("server answered %d requests, want %d", got, n)
	}
	for i := range n {
		if r.errs[i] != nil {
			t.Fatalf("target %d: %v", i, r.errs[i])
		}
		if got := r.samples[i].Capacity; got != float64(i+1) {
			t.Errorf("result %d has capacity %v: it belongs to target %v", i, got, got-1)
		}
	}
}

// The concurrency bound is the Scraper's, shared by concurrent passes (one
// per pool), not one per pass.
func TestScrapeAllBoundIsSharedAcrossPasses(t *testing.T) {
	const perPass, passes, limit = 4, 3, 2
	const wait = 10 * time.Second
	gate, url := scrServeGate(t, perPass*passes)
	s := NewScraper(time.Minute, limit)
	var wg sync.WaitGroup
	errCh := make(chan error, perPass*passes)
	for range passes {
		wg.Go(func() {
			_, errs := s.ScrapeAll(context.Background(), scrGateTargets(url, perPass))
			for _, err := range errs {
				errCh <- err
			}
		})
	}
	var blocked []scrArrival
	for range limit {
		blocked = append(blocked, gate.next(t, wait))
	}
	gate.quiet(t, 250*time.Millisecond)
	for started := limit; started < perPass*passes; started++ {
		if got := gate.inFlight.Load(); got != limit {
			t.Fatalf("%d requests in flight across %d passes, want %d", got, passes, limit)
		}
		close(blocked[0].release)
		blocked = append(blocked[1:], gate.next(t, wait))
	}
	for len(blocked) > 0 {
		close(blocked[0].release)
		blocked = blocked[1:]
	}
	passesDone := make(chan struct{})
	go func() { wg.Wait(); close(passesDone) }()
	select {
	case <-passesDone:
	case <-time.After(wait):
		t.Fatalf("passes did not return within %s", wait)
	}
	close(errCh)
	for err := range errCh {
		if err != nil {
			t.Error(err)
		}
	}
	if p := gate.peak.Load(); p != limit {
		t.Errorf("peak concurrency %d across %d passes, want %d", p, passes, limit)
	}
}

// Cancelling the pass while a scrape is in flight fails that scrape and
// every target not started yet, without requesting them.
func TestScrapeAllCancelledContextFailsRemainingTargets(t *testing.T) {
	const n = 5
	const wait = 10 * time.Second
	gate, url := scrServeGate(t, n)
	s := NewScraper(time.Minute, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		samples []*podSample
		errs    []error
	}
	done := make(chan result, 1)
	go func() {
		samples, errs := s.ScrapeAll(ctx, scrGateTargets(url, n))
		done <- result{samples, errs}
	}()
	first := gate.next(t, wait)
	if first.index != 0 {
		t.Fatalf("first request was for target %d, want 0", first.index)
	}
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(wait):
		t.Fatalf("ScrapeAll did not return within %s of the cancellation", wait)
	}
	for i := range n {
		if r.samples[i] != nil || r.errs[i] == nil {
			t.Errorf("target %d: sample %+v, error %v; want an error", i, r.samples[i], r.errs[i])
		}
	}
	for i := 1; i < n; i++ {
		if !errors.Is(r.errs[i], context.Canceled) {
			t.Errorf("target %d (not started): error %v, want context.Canceled", i, r.errs[i])
		}
	}
	select {
	case a := <-gate.arrived:
		t.Errorf("target %d was requested after the cancellation", a.index)
	default:
	}
}

// A pass started with an already cancelled context fails every target and
// sends no request.
func TestScrapeAllWithCancelledContextRequestsNothing(t *testing.T) {
	const n = 50
	var requests atomic.Int64
	url := scrServe(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		_, _ = fmt.Fprintf(w, "%s 1\n", metricCapacity)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	samples, errs := NewScraper(5*time.Second, 8).ScrapeAll(ctx, scrGateTargets(url, n))
	for i := range n {
		if samples[i] != nil || errs[i] == nil {
			t.Errorf("target %d: sample %+v, error %v; want an error", i, samples[i], errs[i])
		}
	}
	if got := requests.Load(); got != 0 {
		t.Errorf("%d requests sent on a cancelled context", got)
	}
}

func TestTargetFor(t *testing.T) {
	pod := func(ip string, containers ...corev1.Container) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "payments-7c9-abcde", Namespace: "shop"},
			Spec:       corev1.PodSpec{Containers: containers},
			Status:     corev1.PodStatus{PodIP: ip},
		}
	}
	ports := func(ps ...corev1.ContainerPort) corev1.Container { return corev1.Container{Name: "c", Ports: ps} }
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"named metrics port", pod("10.1.2.3",
			ports(corev1.ContainerPort{Name: "http", ContainerPort: 8080}, corev1.ContainerPort{Name: "metrics", ContainerPort: 9102})),
			"http://10.1.2.3:9102/metrics"},
		{"metrics port on a second container", pod("10.1.2.3",
			ports(corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
			ports(corev1.ContainerPort{Name: "metrics", ContainerPort: 9200})),
			"http://10.1.2.3:9200/metrics"},
		{"no ports: 9090", pod("10.1.2.3", corev1.Container{Name: "worker"}), "http://10.1.2.3:9090/metrics"},
		{"no container: 9090", pod("10.1.2.3"), "http://10.1.2.3:9090/metrics"},
		{"only other ports: 9090", pod("10.1.2.3", ports(corev1.ContainerPort{Name: "http", ContainerPort: 8080})),
			"http://10.1.2.3:9090/metrics"},
		{"IPv6", pod("fd00:10:244::7", ports(corev1.ContainerPort{Name: "metrics", ContainerPort: 9090})),
			"http://[fd00:10:244::7]:9090/metrics"},
		{"IPv6 default port", pod("2001:db8::1"), "http://[2001:db8::1]:9090/metrics"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := targetFor(c.pod)
			if err != nil {
				t.Fatal(err)
			}
			if got.URL != c.want || got.Pod != "payments-7c9-abcde" {
				t.Fatalf("target %+v, want URL %s for pod payments-7c9-abcde", got, c.want)
			}
		})
	}
	if got, err := targetFor(pod("", corev1.Container{Name: "worker"})); err == nil || !strings.Contains(err.Error(), "no IP") {
		t.Fatalf("pod without IP: target %+v, error %v; want an error saying it has no IP", got, err)
	}
}

// The URL targetFor builds for an IPv6 pod is one the scraper can reach.
func TestTargetForIPv6IsScrapable(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("IPv6 loopback unavailable: %v", err)
	}
	url := scrServeOn(t, ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintf(w, "%s 6\n", metricCapacity)
	}))
	port, err := strconv.Atoi(url[strings.LastIndex(url, ":")+1:])
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := targetFor(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "v6"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "worker",
			Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: int32(port)}}}}},
		Status: corev1.PodStatus{PodIP: "::1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	samples, errs := NewScraper(5*time.Second, 1).ScrapeAll(context.Background(), []scrapeTarget{tgt})
	if errs[0] != nil || samples[0].Capacity != 6 {
		t.Fatalf("scrape %s: sample %+v, error %v", tgt.URL, samples[0], errs[0])
	}
}

// A page past the size limit is refused, even when the cut falls on a line
// boundary and what was read would parse.
func TestScrapeRefusesAnOversizedPage(t *testing.T) {
	line := "# padding comment line that a worker would never send\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "tasker_dispatch_capacity 10\n")
		for written := 0; written <= maxMetricsBody; written += len(line) {
			_, _ = io.WriteString(w, line)
		}
	}))
	defer srv.Close()
	s := NewScraper(5*time.Second, 1)
	_, errs := s.ScrapeAll(context.Background(), []scrapeTarget{{Pod: "big", URL: srv.URL + "/metrics"}})
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "metrics page larger than 4194304 bytes") {
		t.Fatalf("oversized page: %v", errs[0])
	}
}

// A pass cancelled by its caller reports the cancellation, not a timeout.
func TestScrapeCancelledPassSaysSo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := NewScraper(5*time.Second, 1)
	targets := make([]scrapeTarget, 20)
	for i := range targets {
		targets[i] = scrapeTarget{Pod: fmt.Sprint(i), URL: "http://127.0.0.1:1/metrics"}
	}
	_, errs := s.ScrapeAll(ctx, targets)
	for i, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("target %d: %v, want context.Canceled", i, err)
		}
	}
}

// scrRealWorkerPage is the real worker's /metrics page (FFI on, capacity 9)
// in the exposition the scraper asks for, or in text when text is true.
func scrRealWorkerPage(t *testing.T, text bool) (body []byte, format expfmt.Format) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := scrNewRealWorker(t, ln, 9, true).Handler()
	if text {
		h = scrTextOnly(h)
	}
	rec := scrRecord(h, scrRecordRequest())
	return rec.body, expfmt.ResponseFormat(rec.header)
}

// Only the families the status reads are decoded: a family the operator
// does not read that no parser would accept (a runtime's own exporter gone
// wrong) costs the pod nothing, in either exposition.
func TestParseSampleSkipsFamiliesItDoesNotRead(t *testing.T) {
	t.Run("protobuf", func(t *testing.T) {
		page, format := scrRealWorkerPage(t, false)
		if format.FormatType() != expfmt.TypeProtoDelim {
			t.Fatalf("the worker answered %q, want delimited protobuf", format)
		}
		// A MetricFamily named "other_runtime_family" whose help (field 2)
		// claims 100 bytes and has 3: not decodable.
		undecodable := func(name string) []byte {
			msg := protowire.AppendTag(nil, 1, protowire.BytesType)
			msg = protowire.AppendString(msg, name)
			msg = protowire.AppendTag(msg, 2, protowire.BytesType)
			msg = protowire.AppendVarint(msg, 100)
			msg = append(msg, "abc"...)
			return append(protowire.AppendVarint(nil, uint64(len(msg))), msg...)
		}
		broken := undecodable("other_runtime_family")
		if err := proto.Unmarshal(broken[1:], &dto.MetricFamily{}); err == nil {
			t.Fatal("the broken family decodes: the test proves nothing")
		}
		withBroken := append(append(append([]byte(nil), broken...), page...), broken...)
		got, err := parseSample(bytes.NewReader(withBroken), format)
		if err != nil {
			t.Fatalf("a page with an unreadable family the status does not need: %v", err)
		}
		got.LastPollAgeMs = 0 // a clock reading of the worker's, not one of its counts
		if want := (podSample{Capacity: 9}); *got != want {
			t.Fatalf("read %+v, want %+v", *got, want)
		}
		// The same message under a name the status reads is decoded, and
		// refused; so is a page cut inside a family.
		if _, err := parseSample(bytes.NewReader(append(undecodable(metricInFlight), page...)), format); err == nil {
			t.Error("an unreadable family the status reads was accepted")
		}
		if _, err := parseSample(bytes.NewReader(page[:len(page)-3]), format); err == nil {
			t.Error("a page cut inside a family was accepted")
		}
	})
	t.Run("text", func(t *testing.T) {
		page, format := scrRealWorkerPage(t, true)
		if format.FormatType() != expfmt.TypeTextPlain {
			t.Fatalf("the text-only worker answered %q, want text/plain", format)
		}
		broken := []byte("# TYPE other_runtime_family gauge\nother_runtime_family{pool=\"a\" 3 not a sample\n")
		got, err := parseSample(bytes.NewReader(append(append([]byte(nil), broken...), page...)), format)
		if err != nil {
			t.Fatalf("a page with an unreadable family the status does not need: %v", err)
		}
		got.LastPollAgeMs = 0 // a clock reading of the worker's, not one of its counts
		if want := (podSample{Capacity: 9}); *got != want {
			t.Fatalf("read %+v, want %+v", *got, want)
		}
		// A broken line of a family the status reads still fails the page.
		bad := append([]byte("tasker_dispatch_in_flight{x=\"1\" 3 not a sample\n"), page...)
		if _, err := parseSample(bytes.NewReader(bad), format); err == nil {
			t.Error("a broken line of a family the status reads was accepted")
		}
	})
}

// Reading the real worker's page allocates for the eleven families the status
// reads, not for the whole page (870 allocations per page when every
// family was decoded; the scrape pass over thousands of pods is mostly this).
func TestParseSampleDecodesOnlyWhatItReads(t *testing.T) {
	page, format := scrRealWorkerPage(t, false)
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := parseSample(bytes.NewReader(page), format); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 150 {
		t.Fatalf("%v allocations to read one worker page of %d bytes, want at most 150", allocs, len(page))
	}
}
