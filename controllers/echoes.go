package controllers

import (
	"slices"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// echoMaxAge is how long a write's watch event is waited for. It comes
// within milliseconds; an entry still there this long after (its event was
// never delivered, or the child was replaced meanwhile) is forgotten.
const echoMaxAge = time.Minute

// ownWrites recognises the watch events of the operator's own child writes
// (their echoes), so that an echo does not start another pass over its pool:
// the pass that wrote the child computed the status from the write's
// response already, and a second pass would find nothing to do (at 10 000
// new pools, 10 000 passes). A change by anyone else (the Deployment
// controller's status, a user's edit, a deletion) is another event and
// starts a pass as before.
//
// The echo can reach the informer before the write's response reaches the
// pass, so a write is registered before it is sent: events of the child that
// arrive meanwhile are held back and compared with the response when it
// comes. If one of them was not the echo, the pass is told to run again.
type ownWrites struct {
	mu      sync.Mutex
	entries map[echoKey]*echoEntry
	swept   time.Time
}

type echoKey struct{ kind, namespace, name string }

type echoEntry struct {
	inFlight        bool
	resourceVersion string   // the write's, once its response came
	held            []string // versions of the events held back while in flight
	at              time.Time
}

func echoKeyOf(o client.Object) echoKey {
	return echoKey{kindOf(o), o.GetNamespace(), o.GetName()}
}

// writing registers a write of o about to be sent.
func (w *ownWrites) writing(o client.Object, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.entries == nil {
		w.entries = map[echoKey]*echoEntry{}
	}
	w.entries[echoKeyOf(o)] = &echoEntry{inFlight: true, at: now}
	if now.Sub(w.swept) > echoMaxAge {
		for k, e := range w.entries {
			if now.Sub(e.at) > echoMaxAge {
				delete(w.entries, k)
			}
		}
		w.swept = now
	}
}

// wrote records the response of the write registered for o (o as the API
// server returned it; nil when the write failed). It reports whether an
// event held back meanwhile was not this write's echo: then the child
// changed beside the write and the pool needs another pass.
func (w *ownWrites) wrote(o client.Object, written client.Object) (missed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := echoKeyOf(o)
	e := w.entries[k]
	if e == nil || !e.inFlight {
		return false // swept while in flight: its events went through
	}
	rv := ""
	if written != nil {
		rv = written.GetResourceVersion()
	}
	missed = slices.ContainsFunc(e.held, func(v string) bool { return v != rv })
	if rv == "" || slices.Contains(e.held, rv) {
		delete(w.entries, k) // failed, or the echo came already
		return missed
	}
	e.inFlight, e.resourceVersion, e.held = false, rv, nil
	return missed
}

// echo says whether an event of o must be held back as the echo of the
// operator's own write: held while a write is in flight, or the write's
// echo (which comes once: the entry goes with it). Another version leaves
// a finished write's entry alone: resourceVersions are opaque, so an older
// event delivered late cannot be told from a newer one, and the entry of an
// echo that never comes goes after echoMaxAge.
func (w *ownWrites) echo(o client.Object) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := echoKeyOf(o)
	e := w.entries[k]
	switch {
	case e == nil:
		return false
	case e.inFlight:
		e.held = append(e.held, o.GetResourceVersion())
		return true
	case e.resourceVersion == o.GetResourceVersion():
		delete(w.entries, k)
		return true
	}
	return false
}

// forget drops what is known of o (deleted).
func (w *ownWrites) forget(o client.Object) {
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
