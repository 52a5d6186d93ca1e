package worker

import (
	"sync"

	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// claimSet is the claims this worker holds and has not settled: the set the
// heartbeat keeps alive. A claim leaves it when its result is settled, when
// it is released, or when its result could not be delivered (so that it
// expires and is redelivered rather than being extended forever).
type claimSet struct {
	mu sync.Mutex
	m  map[int64]int64 // id → token
}

func newClaimSet() *claimSet { return &claimSet{m: map[int64]int64{}} }

func (s *claimSet) add(steps []queue.ClaimedStep) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range steps {
		s.m[st.ID] = st.Token
	}
}

// remove drops claims, but only if the token still matches (a newer claim of
// the same row by this worker must stay).
func (s *claimSet) remove(claims ...queue.Claim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range claims {
		if s.m[c.ID] == c.Token {
			delete(s.m, c.ID)
		}
	}
}

func (s *claimSet) snapshot() []queue.Claim {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]queue.Claim, 0, len(s.m))
	for id, tok := range s.m {
		out = append(out, queue.Claim{ID: id, Token: tok})
	}
	return out
}

func (s *claimSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
