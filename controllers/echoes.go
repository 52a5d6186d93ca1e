package controllers

import (
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// echoMaxAge is how long a write waits for its watch event to come back.
// The event comes within milliseconds; an entry still there this long
// after (its event was delivered before the write's response, or the child
// was replaced in between) is forgotten.
const echoMaxAge = time.Minute

// ownWrites remembers the resourceVersion each child had after the
// operator's own apply, so that the watch event of that write (the echo)
// does not start another pass over its pool: the pass that wrote the child
// computed the status from the apply's response already, and a second pass
// would find nothing to do. At 10 000 new pools that is 10 000 passes. A
// change by anyone else (the Deployment controller's status, a user's edit,
// a deletion) has another resourceVersion and starts a pass as before.
type ownWrites struct {
	mu      sync.Mutex
	entries map[echoKey]echoEntry
	swept   time.Time
}

type echoKey struct{ kind, namespace, name string }

type echoEntry struct {
	resourceVersion string
	at              time.Time
}

func echoKeyOf(o client.Object) echoKey {
	return echoKey{kindOf(o), o.GetNamespace(), o.GetName()}
}

// wrote records o as the operator's write returned it.
func (w *ownWrites) wrote(o client.Object, now time.Time) {
	if w == nil || o.GetResourceVersion() == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.entries == nil {
		w.entries = map[echoKey]echoEntry{}
	}
	w.entries[echoKeyOf(o)] = echoEntry{resourceVersion: o.GetResourceVersion(), at: now}
	if now.Sub(w.swept) > echoMaxAge {
		for k, e := range w.entries {
			if now.Sub(e.at) > echoMaxAge {
				delete(w.entries, k)
			}
		}
		w.swept = now
	}
}

// echo says whether o is the operator's own last write coming back through
// the watch (then the write is forgotten: its echo comes once). Another
// version leaves the entry alone: resourceVersions are opaque, so an event
// of an older version (delivered after the write returned) cannot be told
// from a newer one, and an entry whose echo was missed goes after
// echoMaxAge.
func (w *ownWrites) echo(o client.Object) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	k := echoKeyOf(o)
	if e, ok := w.entries[k]; ok && e.resourceVersion == o.GetResourceVersion() {
		delete(w.entries, k)
		return true
	}
	return false
}

// forget drops what is known of o (deleted).
func (w *ownWrites) forget(o client.Object) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.entries, echoKeyOf(o))
}

// notOwnEcho lets through every event of a child but the echo of the
// operator's own write.
func (w *ownWrites) notOwnEcho() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return !w.echo(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool { return !w.echo(e.ObjectNew) },
		DeleteFunc: func(e event.DeleteEvent) bool { w.forget(e.Object); return true },
	}
}
