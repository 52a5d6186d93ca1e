package controllers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// Worker metric names the status is built from (ARCHITECTURE.md's contract).
const (
	metricInFlight          = "tasker_dispatch_in_flight"
	metricCapacity          = "tasker_dispatch_capacity"
	metricSaturation        = "tasker_channel_completion_saturation"
	metricPending           = "tasker_ffi_pending_events"
	metricOldestAge         = "tasker_ffi_oldest_event_age_ms"
	metricStarving          = "tasker_ffi_starving_events"
	metricUnpolled          = "tasker_ffi_unpolled_events"
	metricOldestUnpolled    = "tasker_ffi_oldest_unpolled_age_ms"
	metricLastPoll          = "tasker_ffi_last_poll_age_ms"
	metricCallbackTimeouts  = "tasker_callback_timeouts_total"
	metricSemaphoreFailures = "tasker_semaphore_acquisition_failures_total"
)

// maxMetricsBody bounds what one pod may send: a worker's page is a few
// tens of KiB, and a misbehaving pod must not balloon the operator.
const maxMetricsBody = 4 << 20

// acceptHeader asks for the protobuf exposition (cheaper to parse across
// hundreds of pods) and falls back to text, as Prometheus does.
const acceptHeader = `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3`

// Scraper reads the workers' /metrics with a per-pod timeout and bounded
// concurrency, so one slow or dead pod cannot hold up a pool's status and
// a big pool cannot open thousands of connections at once.
type Scraper struct {
	// Client does the requests; its connections are reused across passes.
	Client *http.Client
	// Timeout bounds one pod's scrape.
	Timeout time.Duration
	// Concurrency bounds scrapes in flight across all pools.
	Concurrency int

	once sync.Once
	sem  chan struct{}
}

// NewScraper returns a Scraper with a transport tuned for many small
// requests to many pods.
func NewScraper(timeout time.Duration, concurrency int) *Scraper {
	if concurrency < 1 {
		concurrency = 1
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // pod IPs are never reached through a proxy
	// No total cap on idle connections: passes visit pods in the same order,
	// so any cap below the pod count would evict every connection before its
	// next use and each pass would dial every pod again. One idle connection
	// per pod is kept.
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = 1
	tr.IdleConnTimeout = 2 * time.Minute
	// Pod pages are small and local: compressing them costs each pod more
	// CPU than the bytes are worth.
	tr.DisableCompression = true
	return &Scraper{Client: &http.Client{Transport: tr}, Timeout: timeout, Concurrency: concurrency}
}

// scrapeTarget is one pod to read.
type scrapeTarget struct {
	Pod string
	URL string
}

// targetFor returns the metrics URL of a pod: its IP and the port named
// "metrics" (9090 when the pod declares none).
func targetFor(pod *corev1.Pod) (scrapeTarget, error) {
	if pod.Status.PodIP == "" {
		return scrapeTarget{}, errors.New("pod has no IP yet")
	}
	port := int32(MetricsPort)
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == v1.MetricsPortName {
				port = p.ContainerPort
			}
		}
	}
	return scrapeTarget{Pod: pod.Name, URL: "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))) + "/metrics"}, nil
}

// ScrapeAll reads every target and returns one result per target, in order.
func (s *Scraper) ScrapeAll(ctx context.Context, targets []scrapeTarget) ([]*podSample, []error) {
	s.once.Do(func() { s.sem = make(chan struct{}, max(1, s.Concurrency)) })
	samples, errs := make([]*podSample, len(targets)), make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		if ctx.Err() != nil { // select below picks at random when both are ready
			for j := i; j < len(targets); j++ {
				errs[j] = fmt.Errorf("scrape %s: %w", targets[j].URL, context.Cause(ctx))
			}
			wg.Wait()
			return samples, errs
		}
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			for j := i; j < len(targets); j++ {
				errs[j] = fmt.Errorf("scrape %s: %w", targets[j].URL, context.Cause(ctx))
			}
			wg.Wait()
			return samples, errs
		}
		wg.Go(func() {
			defer func() { <-s.sem }()
			samples[i], errs[i] = s.scrape(ctx, t)
		})
	}
	wg.Wait()
	return samples, errs
}

func (s *Scraper) scrape(parent context.Context, t scrapeTarget) (*podSample, error) {
	ctx, cancel := context.WithTimeout(parent, s.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", t.URL, err)
	}
	req.Header.Set("Accept", acceptHeader)
	resp, err := s.Client.Do(req)
	if err != nil {
		if parent.Err() != nil {
			return nil, fmt.Errorf("scrape %s: %w", t.URL, context.Cause(parent))
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("scrape %s: no answer within %s", t.URL, s.Timeout)
		}
		return nil, fmt.Errorf("scrape %s: %w", t.URL, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("scrape %s: HTTP %d", t.URL, resp.StatusCode)
	}
	body := &limitedReader{r: resp.Body, left: maxMetricsBody}
	sample, err := parseSample(body, expfmt.ResponseFormat(resp.Header))
	if body.over {
		return nil, fmt.Errorf("scrape %s: metrics page larger than %d bytes", t.URL, maxMetricsBody)
	}
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", t.URL, err)
	}
	return sample, nil
}

// statusFamilies are the families a pod's sample is read from, and how
// each family's series combine into one figure.
var statusFamilies = map[string]struct {
	into    func(*podSample) *float64
	combine func(*dto.MetricFamily) float64
}{
	metricInFlight:          {func(s *podSample) *float64 { return &s.InFlight }, familySum},
	metricCapacity:          {func(s *podSample) *float64 { return &s.Capacity }, familySum},
	metricSaturation:        {func(s *podSample) *float64 { return &s.CompletionSaturation }, familyMax},
	metricPending:           {func(s *podSample) *float64 { return &s.PendingEvents }, familySum},
	metricOldestAge:         {func(s *podSample) *float64 { return &s.OldestPendingAgeMs }, familyMax},
	metricStarving:          {func(s *podSample) *float64 { return &s.StarvingEvents }, familySum},
	metricUnpolled:          {func(s *podSample) *float64 { return &s.UnpolledEvents }, familySum},
	metricOldestUnpolled:    {func(s *podSample) *float64 { return &s.OldestUnpolledAgeMs }, familyMax},
	metricLastPoll:          {func(s *podSample) *float64 { return &s.LastPollAgeMs }, familyMax},
	metricCallbackTimeouts:  {func(s *podSample) *float64 { return &s.CallbackTimeouts }, familySum},
	metricSemaphoreFailures: {func(s *podSample) *float64 { return &s.SemaphoreFailures }, familySum},
}

// parseSample reads a metrics page into a sample. Only the families in
// statusFamilies are decoded; the rest of the page (the Go and process
// collectors, the queue's and the worker's other series: most of it) is
// skipped unread, so it costs neither time nor a failed scrape when it is
// malformed. A page without the dispatch gauges is not a worker's, and is
// refused rather than read as an idle pod.
func parseSample(r io.Reader, format expfmt.Format) (*podSample, error) {
	var s podSample
	worker := false
	read := func(mf *dto.MetricFamily) {
		f, ok := statusFamilies[mf.GetName()]
		if !ok {
			return
		}
		*f.into(&s) = f.combine(mf)
		worker = worker || mf.GetName() == metricCapacity
	}
	var err error
	if format.FormatType() == expfmt.TypeProtoDelim {
		err = readProtoFamilies(r, read)
	} else {
		err = readTextFamilies(r, format, read)
	}
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	if !worker {
		return nil, fmt.Errorf("parse metrics: no %s: not a tasker-worker metrics page", metricCapacity)
	}
	return &s, nil
}

// protoPageReader is the reusable state of reading one protobuf page.
type protoPageReader struct {
	br  *bufio.Reader
	msg []byte
}

var protoPageReaders = sync.Pool{New: func() any { return &protoPageReader{br: bufio.NewReaderSize(nil, 16<<10)} }}

// readProtoFamilies reads a delimited protobuf page (a varint length before
// each MetricFamily message) and decodes only the messages whose name field
// is a status family.
func readProtoFamilies(r io.Reader, read func(*dto.MetricFamily)) error {
	p := protoPageReaders.Get().(*protoPageReader)
	defer protoPageReaders.Put(p)
	p.br.Reset(r)
	defer p.br.Reset(nil) // keep no reference to the response body
	for {
		size, err := binary.ReadUvarint(p.br)
		if errors.Is(err, io.EOF) {
			return nil // between two messages: the end of the page
		}
		if err != nil {
			return err
		}
		if size > maxMetricsBody {
			return fmt.Errorf("a metric family of %d bytes", size)
		}
		p.msg = slices.Grow(p.msg[:0], int(size))[:size]
		if _, err := io.ReadFull(p.br, p.msg); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if name, ok := protoFamilyName(p.msg); ok {
			if _, wanted := statusFamilies[string(name)]; !wanted {
				continue
			}
		}
		var mf dto.MetricFamily
		if err := proto.Unmarshal(p.msg, &mf); err != nil {
			return err
		}
		read(&mf)
	}
}

// protoFamilyName finds a MetricFamily message's name (field 1) without
// decoding the message; ok is false when it has none or is malformed, and
// the message is then decoded in full to find out.
func protoFamilyName(msg []byte) (name []byte, ok bool) {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, false
		}
		msg = msg[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(msg)
			return v, n >= 0
		}
		if n = protowire.ConsumeFieldValue(num, typ, msg); n < 0 {
			return nil, false
		}
		msg = msg[n:]
	}
	return nil, false
}

// readTextFamilies reads a text page: it keeps the lines of the status
// families (samples, and their HELP and TYPE comments) and any line it
// cannot attribute to a family, and decodes only those.
func readTextFamilies(r io.Reader, format expfmt.Format, read func(*dto.MetricFamily)) error {
	var kept bytes.Buffer
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxMetricsBody)
	for sc.Scan() {
		line := sc.Bytes()
		if name, ok := textLineFamily(line); ok {
			if _, wanted := statusFamilies[string(name)]; !wanted {
				continue
			}
		}
		kept.Write(line)
		kept.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return err
	}
	dec := expfmt.NewDecoder(&kept, format)
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		read(&mf)
	}
}

// textLineFamily is the metric name a text exposition line is about: the
// name before a sample's labels or value, or after "# HELP", "# TYPE" or
// "# UNIT". ok is false for other lines (blank, other comments, a quoted
// UTF-8 name), which are kept.
func textLineFamily(line []byte) (name []byte, ok bool) {
	if rest, isComment := bytes.CutPrefix(line, []byte("# ")); isComment {
		keyword, rest, _ := bytes.Cut(rest, []byte(" "))
		if !bytes.Equal(keyword, []byte("HELP")) && !bytes.Equal(keyword, []byte("TYPE")) && !bytes.Equal(keyword, []byte("UNIT")) {
			return nil, false
		}
		name, _, _ = bytes.Cut(rest, []byte(" "))
		return name, len(name) > 0
	}
	end := bytes.IndexAny(line, "{ \t")
	if end <= 0 {
		return nil, false
	}
	return line[:end], true
}

// familySum adds up a family's series (a worker exposes one per name; a
// runtime that embeds several channels may expose more).
func familySum(mf *dto.MetricFamily) float64 {
	var sum float64
	for _, m := range mf.GetMetric() {
		sum += value(m)
	}
	return sum
}

// familyMax is the worst series, for fills and ages, which do not add up.
func familyMax(mf *dto.MetricFamily) float64 {
	var worst float64
	for _, m := range mf.GetMetric() {
		worst = max(worst, value(m))
	}
	return worst
}

// value reads a sample; NaN and infinities (a broken exporter) count as 0
// rather than poisoning the pool's aggregates.
func value(m *dto.Metric) float64 {
	var v float64
	switch {
	case m.GetGauge() != nil:
		v = m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		v = m.GetCounter().GetValue()
	case m.GetUntyped() != nil:
		v = m.GetUntyped().GetValue()
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// limitedReader stops at a byte limit and remembers that the page went past
// it: a page cut at a line boundary would otherwise parse, silently
// missing whatever came after the cut.
type limitedReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			l.over = true
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}
