package worker

import (
	"sync"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// claimSet is the claims this worker holds and has not settled: the set the
// heartbeat keeps alive. A claim leaves it when its result is settled, when
// it is released, or when its result could not be delivered (so that it
// expires and is redelivered rather than being extended forever).
type claimSet struct {
	mu sync.Mutex
	m  map[int64]heldClaim // by row id
}

type heldClaim struct {
	token int64
	since time.Time // when this worker received the claim
}

func newClaimSet() *claimSet { return &claimSet{m: map[int64]heldClaim{}} }

func (s *claimSet) add(steps []queue.ClaimedStep) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range steps {
		s.m[st.ID] = heldClaim{token: st.Token, since: now}
	}
}

// remove drops claims, but only if the token still matches (a newer claim of
// the same row by this worker must stay).
func (s *claimSet) remove(claims ...queue.Claim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range claims {
		if h, ok := s.m[c.ID]; ok && h.token == c.Token {
			delete(s.m, c.ID)
		}
	}
}

// snapshot returns the claims held for at least minAge.
func (s *claimSet) snapshot(minAge time.Duration) []queue.Claim {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]queue.Claim, 0, len(s.m))
	for id, h := range s.m {
		if now.Sub(h.since) >= minAge {
			out = append(out, queue.Claim{ID: id, Token: h.token})
		}
	}
	return out
}

func (s *claimSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
