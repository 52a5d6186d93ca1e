package controllers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/seed-a17b38e7/workerpool-operator/internal/worker"
)

// One status pass over 500 and over 5 000 pods, as the operator runs it
// (cmd/manager's defaults: 64 scrapes in flight, 2 s per pod):
//
//	go test -run='^$' -bench='ScrapePass(500|5000)$' -benchtime=20x -count=3 ./controllers/
//
// Each pod is its own loopback address (127.0.1.1 … 127.0.2.244 for 500,
// … 127.0.20.136 for 5 000), so each is a distinct host to the transport, as
// pod IPs are. Each answers with the response the real tasker-worker gave to
// the scraper's exact request (worker.New with FFI on: queue, dispatch, FFI
// and channel families, Go and process collectors; promhttp's protobuf
// exposition, uncompressed because the scraper's transport does not ask for
// gzip), recorded at setup (once per distinct capacity) and replayed.
// Rendering live in this process would charge the operator's 2 cores with
// work the pods do on their own CPUs; pod-render measures that work per pod.
//
// Sub-benchmarks:
//   - scrape: Scraper.ScrapeAll over the pods, NewScraper as shipped.
//     Each timed pass is followed, outside the timer, by one baseline pass
//     with the same client, reported as baseline-ns/op and ratio
//     (baseline/scrape, the docs' throughput ratio), so drift on a noisy
//     machine hits both alike.
//   - baseline: the same GETs (same headers, concurrency, timeout and
//     transport settings), body read to the end and discarded, not parsed.
//   - pod-render: one live worker's /metrics handler serving the same
//     request (what each pod spends per scrape), with the page's size.
//
// conns/op is TCP connections the pods accepted per pass. Every pass but
// pod-render starts with connections left idle by an untimed warm-up pass,
// as the operator's passes do between status intervals.
const (
	benchConcurrency = 64
	benchTimeout     = 2 * time.Second
)

func BenchmarkScrapePass500(b *testing.B) { benchScrapePass(b, 500) }

func BenchmarkScrapePass5000(b *testing.B) { benchScrapePass(b, 5000) }

func benchScrapePass(b *testing.B, pods int) {
	// Listeners, and a client and a server socket per kept-alive connection.
	scrRaiseNoFile(b, uint64(3*pods+512))
	fleet := scrStartFleet(b, pods)
	ctx := context.Background()

	scrape := func(b *testing.B, s *Scraper, interleaveBaseline bool) {
		defer s.Client.CloseIdleConnections()            // the next sub-benchmark's descriptors
		samples, errs := s.ScrapeAll(ctx, fleet.targets) // warm-up: connections
		fleet.checkPass(b, samples, errs)
		var baseline time.Duration
		conns0 := fleet.conns.Load()
		b.ReportAllocs()
		for b.Loop() {
			samples, errs := s.ScrapeAll(ctx, fleet.targets)
			b.StopTimer()
			fleet.checkPass(b, samples, errs)
			if interleaveBaseline {
				start := time.Now()
				if err := scrPlainPass(ctx, s.Client, fleet.targets, benchConcurrency, benchTimeout); err != nil {
					b.Fatal(err)
				}
				baseline += time.Since(start)
			}
			b.StartTimer()
		}
		passes := b.N
		if interleaveBaseline {
			passes *= 2 // both passes of an iteration open connections alike
			b.ReportMetric(float64(baseline.Nanoseconds())/float64(b.N), "baseline-ns/op")
			b.ReportMetric(float64(baseline.Nanoseconds())/float64(b.Elapsed().Nanoseconds()), "ratio")
		}
		b.ReportMetric(float64(fleet.conns.Load()-conns0)/float64(passes), "conns/op")
	}

	b.Run("scrape", func(b *testing.B) {
		scrape(b, NewScraper(benchTimeout, benchConcurrency), true)
	})

	b.Run("baseline", func(b *testing.B) {
		client := NewScraper(benchTimeout, benchConcurrency).Client
		defer client.CloseIdleConnections()
		if err := scrPlainPass(ctx, client, fleet.targets, benchConcurrency, benchTimeout); err != nil {
			b.Fatal(err)
		}
		conns0 := fleet.conns.Load()
		b.ReportAllocs()
		for b.Loop() {
			if err := scrPlainPass(ctx, client, fleet.targets, benchConcurrency, benchTimeout); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(fleet.conns.Load()-conns0)/float64(b.N), "conns/op")
	})

	b.Run("pod-render", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		h := scrNewRealWorker(b, ln, 10, true).Handler()
		req := scrRecordRequest()
		rec := scrRecord(h, req)
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(&scrDiscardResponse{}, req)
		}
		b.ReportMetric(float64(len(rec.body)), "B/page")
	})
}

// scrFleet is N pods, each on its own loopback address, replaying a real
// worker's response.
type scrFleet struct {
	targets []scrapeTarget
	conns   atomic.Int64 // connections accepted, all pods
}

// scrRecorded is one HTTP response, replayed byte for byte.
type scrRecorded struct {
	header http.Header
	body   []byte
}

func (r *scrRecorded) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(r.body)))
	_, _ = w.Write(r.body)
}

// scrRecordRequest is the request the scraper's transport sends.
func scrRecordRequest() *http.Request {
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", acceptHeader) // and no Accept-Encoding: the transport disables compression
	return req
}

func scrRecord(h http.Handler, req *http.Request) *scrRecorded {
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, req)
	return &scrRecorded{header: rw.Result().Header, body: rw.Body.Bytes()}
}

// scrDiscardResponse is a ResponseWriter that keeps nothing.
type scrDiscardResponse struct{ h http.Header }

func (d *scrDiscardResponse) Header() http.Header {
	if d.h == nil {
		d.h = http.Header{}
	}
	return d.h
}
func (*scrDiscardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (*scrDiscardResponse) WriteHeader(int)             {}

func scrStartFleet(b *testing.B, n int) *scrFleet {
	b.Helper()
	f := &scrFleet{targets: make([]scrapeTarget, n)}
	pages := map[int]*scrRecorded{} // by capacity
	addr := netip.MustParseAddr("127.0.1.1")
	for i := range n {
		rec := pages[scrBenchCapacity(i)]
		if rec == nil {
			rec = scrRecordWorkerPage(b, scrBenchCapacity(i))
			pages[scrBenchCapacity(i)] = rec
		}
		ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		if err != nil {
			b.Fatalf("listen on %s (pod %d): %v", addr, i, err)
		}
		srv := &http.Server{
			Handler:           rec,
			ReadHeaderTimeout: 10 * time.Second,
			ConnState: func(_ net.Conn, st http.ConnState) {
				if st == http.StateNew {
					f.conns.Add(1)
				}
			},
		}
		go func() { _ = srv.Serve(ln) }()
		b.Cleanup(func() { _ = srv.Close() })
		f.targets[i] = scrapeTarget{Pod: fmt.Sprintf("pool-%04d", i), URL: "http://" + ln.Addr().String() + "/metrics"}
		addr = addr.Next()
	}
	return f
}

// scrRecordWorkerPage assembles the real worker with the given capacity
// (it never serves: it is not run), records its answer to the scraper's
// request, and closes its pool at once.
func scrRecordWorkerPage(b *testing.B, capacity int) *scrRecorded {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	w, err := worker.New(context.Background(), worker.Options{
		Config:      scrWorkerConfig(capacity, true),
		DatabaseURL: "postgres://scrape-test@127.0.0.1:1/none?connect_timeout=1",
		Listener:    ln, Logger: logr.Discard(), Version: "scrape-bench",
	})
	if err != nil {
		b.Fatalf("assemble worker (capacity %d): %v", capacity, err)
	}
	defer w.Queue().Pool().Close()
	rec := scrRecord(w.Handler(), scrRecordRequest())
	if ce := rec.header.Get("Content-Encoding"); ce != "" {
		b.Fatalf("the worker answered with Content-Encoding %q to a request without Accept-Encoding", ce)
	}
	return rec
}

// scrBenchCapacity gives each pod its own max_concurrent_handlers, so a
// result landing on the wrong pod shows.
func scrBenchCapacity(i int) int { return 10 + i%97 }

func (f *scrFleet) checkPass(b *testing.B, samples []*podSample, errs []error) {
	b.Helper()
	if err := errors.Join(errs...); err != nil {
		b.Fatalf("pass failed: %v", err)
	}
	for i, s := range samples {
		if want := (podSample{Capacity: float64(scrBenchCapacity(i))}); *s != want {
			b.Fatalf("pod %d read as %+v, want %+v", i, *s, want)
		}
	}
}

// scrPlainPass is the transport-only baseline: the scraper's request (same
// Accept header, so the pods do the same encoding work), the same bound on
// requests in flight and the same per-pod timeout; the body is read to the
// end and discarded.
func scrPlainPass(ctx context.Context, client *http.Client, targets []scrapeTarget, concurrency int, timeout time.Duration) error {
	sem := make(chan struct{}, concurrency)
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
			if err != nil {
				errs[i] = err
				return
			}
			req.Header.Set("Accept", acceptHeader)
			resp, err := client.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxMetricsBody)); err != nil {
				errs[i] = err
			} else if resp.StatusCode != http.StatusOK {
				errs[i] = fmt.Errorf("%s: HTTP %d", t.URL, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// scrRaiseNoFile lifts the soft RLIMIT_NOFILE to at least need (up to the
// hard limit): 500 listeners plus a client and a server socket per live
// connection. Go raises it at start on Linux already; this checks it.
func scrRaiseNoFile(b *testing.B, need uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	if lim.Max < need {
		b.Fatalf("RLIMIT_NOFILE hard limit %d is below the %d descriptors this benchmark needs", lim.Max, need)
	}
	lim.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("raise RLIMIT_NOFILE to %d: %v", need, err)
	}
}
