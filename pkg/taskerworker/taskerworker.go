// Package taskerworker is the public Go API for building a Tasker worker
// binary with your own step handlers. Register handlers on a Registry and
// call Main: the binary then has every tasker-worker subcommand (run,
// migrate, enqueue, stats, config validate, version) and runs the same
// durable dispatch core as the stock image.
//
//	func main() {
//		r := taskerworker.NewRegistry()
//		r.MustRegister("charge-card", taskerworker.HandlerFunc(chargeCard))
//		taskerworker.Main(r)
//	}
package taskerworker

import (
	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/handlers"
)

// The handler API, re-exported from the dispatch core so that code outside
// this module can implement and register handlers.
type (
	// Handler runs one step; see dispatch.Handler.
	Handler = dispatch.Handler
	// HandlerFunc adapts a function to Handler.
	HandlerFunc = dispatch.HandlerFunc
	// StepMessage is what a handler receives.
	StepMessage = dispatch.StepMessage
	// StepError lets a handler choose its failure's type and retryability.
	StepError = dispatch.StepError
	// Registry maps handler names to handlers.
	Registry = dispatch.Registry
	// PostHandlerCallback is the domain-event hook run after each result.
	PostHandlerCallback = dispatch.PostHandlerCallback
)

// Permanent marks an error as not worth retrying.
func Permanent(err error) error { return dispatch.Permanent(err) }

// NewRegistry returns a registry holding the built-in handlers (noop, echo,
// sleep, fail, panic), which demos and smoke tests rely on.
func NewRegistry() *Registry {
	r := dispatch.NewRegistry()
	if err := handlers.Register(r); err != nil {
		panic(err) // an empty registry cannot hold duplicates
	}
	return r
}
