package controllers

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

func echoDeployment(rv string) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pool", ResourceVersion: rv}}
}

// The watch event of the operator's own write starts no pass, whether it
// comes after the write's response or before; every other event of a
// child does, or makes the writing pass run again.
func TestOwnWriteEchoStartsNoPass(t *testing.T) {
	var own ownWrites
	p := own.notOwnEcho()
	now := time.Now()
	dep := echoDeployment
	create := func(rv string) bool { return p.Create(event.CreateEvent{Object: dep(rv)}) }
	update := func(rv string) bool { return p.Update(event.UpdateEvent{ObjectOld: dep("1"), ObjectNew: dep(rv)}) }

	// The echo after the response.
	own.writing(dep(""), now)
	if missed := own.wrote(dep(""), dep("10")); missed {
		t.Error("a write with no event meanwhile reported a missed change")
	}
	if !create("7") {
		t.Error("an older version of the child (delivered late) was dropped")
	}
	if create("10") {
		t.Error("the echo of the operator's own create started a pass")
	}
	if !update("10") {
		t.Error("an echo is dropped once: a second event of the same version was dropped")
	}
	if !update("11") {
		t.Error("a change by someone else (the Deployment controller's status) was dropped")
	}

	// The echo before the response: held back, then matched.
	own.writing(dep(""), now)
	if update("12") {
		t.Error("an event while the write was in flight was let through")
	}
	if missed := own.wrote(dep(""), dep("12")); missed {
		t.Error("the echo that came before the response was taken for someone else's change")
	}
	if len(own.entries) != 0 {
		t.Errorf("entries left after the echo was matched: %v", own.entries)
	}

	// Someone else's change while the write was in flight: the pass is told.
	own.writing(dep(""), now)
	if update("13") {
		t.Error("an event while the write was in flight was let through")
	}
	if missed := own.wrote(dep(""), dep("14")); !missed {
		t.Error("a change beside the write was not reported")
	}
	if create("14") {
		t.Error("the echo after a missed change started a pass (the pass runs again already)")
	}

	// A failed write: whatever was held back is reported.
	own.writing(dep(""), now)
	update("15")
	if missed := own.wrote(dep(""), nil); !missed {
		t.Error("an event held back during a failed write was not reported")
	}
	if !update("16") {
		t.Error("after a failed write, events are dropped")
	}

	// Another kind of the same name is not the echo; deletions go through
	// and forget the write.
	own.writing(dep(""), now)
	own.wrote(dep(""), dep("20"))
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pool", ResourceVersion: "20"}}
	if !p.Create(event.CreateEvent{Object: svc}) {
		t.Error("a Service event was taken for the Deployment's echo")
	}
	if !p.Delete(event.DeleteEvent{Object: dep("20")}) {
		t.Error("a deletion of a child was dropped")
	}
	if len(own.entries) != 0 {
		t.Errorf("a deleted child is still remembered: %v", own.entries)
	}

	// A write whose echo never came is forgotten after echoMaxAge.
	own.writing(dep(""), now)
	own.wrote(dep(""), dep("30"))
	own.writing(svc, now.Add(2*echoMaxAge))
	if _, ok := own.entries[echoKeyOf(dep("30"))]; ok || len(own.entries) != 1 {
		t.Errorf("old entries kept: %v", own.entries)
	}
}
