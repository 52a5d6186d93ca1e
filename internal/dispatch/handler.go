package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Handler runs one step. It must honour ctx: the dispatch core cancels it at
// the step's timeout and discards any result that arrives later. Returning a
// *StepError (see Permanent) chooses the failure's type and retryability; any
// other error is a retryable handler_error.
type Handler interface {
	Handle(ctx context.Context, step *StepMessage) (json.RawMessage, error)
}

// HandlerFunc lets a plain function serve as a Handler.
type HandlerFunc func(ctx context.Context, step *StepMessage) (json.RawMessage, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, step *StepMessage) (json.RawMessage, error) {
	return f(ctx, step)
}

// ErrDuplicateHandler is returned when a name is registered twice, which
// would otherwise silently replace a team's handler.
var ErrDuplicateHandler = errors.New("handler already registered")

// Registry maps handler names to handlers. Lookups happen once per step on
// the hot path, so the map is copy-on-write behind an atomic pointer and
// readers never take a lock.
type Registry struct {
	mu       sync.Mutex // serialises writers
	handlers atomic.Pointer[map[string]Handler]
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	r := &Registry{}
	m := map[string]Handler{}
	r.handlers.Store(&m)
	return r
}

// Register adds a handler under name. Empty names, nil handlers and
// duplicates are refused.
func (r *Registry) Register(name string, h Handler) error {
	if name == "" {
		return fmt.Errorf("register handler: name is empty")
	}
	if h == nil {
		return fmt.Errorf("register handler %q: handler is nil", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.handlers.Load()
	if _, ok := old[name]; ok {
		return fmt.Errorf("register handler %q: %w", name, ErrDuplicateHandler)
	}
	next := make(map[string]Handler, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[name] = h
	r.handlers.Store(&next)
	return nil
}

// MustRegister is Register for program start-up, where a duplicate is a bug.
func (r *Registry) MustRegister(name string, h Handler) {
	if err := r.Register(name, h); err != nil {
		panic(err)
	}
}

// Lookup finds the handler for name.
func (r *Registry) Lookup(name string) (Handler, bool) {
	h, ok := (*r.handlers.Load())[name]
	return h, ok
}

// Names lists registered handlers, sorted, for logs and diagnostics.
func (r *Registry) Names() []string {
	m := *r.handlers.Load()
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
