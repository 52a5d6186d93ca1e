package controllers

import (
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// sampleStore remembers, per pool, when its pods were last scraped and each
// pod's last good sample. It lets a pass skip the scrape when the pool was
// read less than a status interval ago and its ready pods are the same (a
// rollout's many Deployment status updates would otherwise each scrape every
// pod), and it lets a pod whose scrape failed count with its recent sample
// instead of vanishing from the pool's figures.
type sampleStore struct {
	mu    sync.Mutex
	pools map[types.NamespacedName]*poolSamples
}

type poolSamples struct {
	scrapedAt time.Time
	podSet    string // the ready pods and their addresses at scrapedAt
	pods      map[string]podRecord
}

// podRecord is one pod's last good sample and the outcome of its last scrape.
type podRecord struct {
	sample  *podSample
	sampled time.Time // when sample was read
	err     error     // the last scrape's error, nil if it succeeded
}

// podSetKey identifies a set of scrape targets, whatever their order.
func podSetKey(targets []scrapeTarget) string {
	keys := make([]string, len(targets))
	for i, t := range targets {
		keys[i] = t.Pod + "=" + t.URL
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

// due says whether the pool must be scraped now: never scraped, its ready
// pods changed, or its last scrape is (nearly) an interval old. The slack
// keeps a pass that the interval's own requeue started a moment early from
// skipping a whole interval.
func (s *sampleStore) due(pool types.NamespacedName, targets []scrapeTarget, now time.Time, interval time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pools[pool]
	return p == nil || p.podSet != podSetKey(targets) || now.Sub(p.scrapedAt) >= interval-interval/10
}

// record stores a scrape of targets at now and forgets pods that are gone.
// With no targets nothing was read: the pool keeps the time of its last
// real scrape (none for a pool that never had a pod to read), so that its
// lastScrapeTime does not advance, and its status is not rewritten, for a
// pass that measured nothing.
func (s *sampleStore) record(pool types.NamespacedName, targets []scrapeTarget, samples []*podSample, errs []error, now time.Time, present map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pools == nil {
		s.pools = map[types.NamespacedName]*poolSamples{}
	}
	p := s.pools[pool]
	if p == nil {
		if len(targets) == 0 {
			return // no state for a pool with nothing to read
		}
		p = &poolSamples{pods: map[string]podRecord{}}
		s.pools[pool] = p
	}
	p.podSet = podSetKey(targets)
	if len(targets) > 0 {
		p.scrapedAt = now
	}
	for i, t := range targets {
		rec := p.pods[t.Pod]
		if errs[i] == nil && samples[i] != nil {
			rec = podRecord{sample: samples[i], sampled: now}
		} else {
			rec.err = errs[i]
		}
		p.pods[t.Pod] = rec
	}
	for name := range p.pods {
		if !present[name] {
			delete(p.pods, name)
		}
	}
}

// lookup returns the pool's last scrape time and a copy of its records.
func (s *sampleStore) lookup(pool types.NamespacedName) (time.Time, map[string]podRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pools[pool]
	if p == nil {
		return time.Time{}, nil
	}
	out := make(map[string]podRecord, len(p.pods))
	for k, v := range p.pods {
		out[k] = v
	}
	return p.scrapedAt, out
}

// forget drops a deleted pool.
func (s *sampleStore) forget(pool types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pools, pool)
}
