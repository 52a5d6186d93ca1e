package controllers

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// The watch event of the operator's own write starts no pass; every other
// event of a child does.
func TestOwnWriteEchoStartsNoPass(t *testing.T) {
	var own ownWrites
	p := own.notOwnEcho()
	now := time.Now()
	dep := func(rv string) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pool", ResourceVersion: rv}}
	}
	own.wrote(dep("10"), now)
	if !p.Create(event.CreateEvent{Object: dep("7")}) {
		t.Error("an older version of the child (a create event from before the write) was dropped")
	}
	if p.Create(event.CreateEvent{Object: dep("10")}) {
		t.Error("the echo of the operator's own create started a pass")
	}
	if !p.Update(event.UpdateEvent{ObjectOld: dep("10"), ObjectNew: dep("11")}) {
		t.Error("a change by someone else (the Deployment controller's status) was dropped")
	}
	own.wrote(dep("12"), now)
	if p.Update(event.UpdateEvent{ObjectOld: dep("11"), ObjectNew: dep("12")}) {
		t.Error("the echo of the operator's own update started a pass")
	}
	if !p.Update(event.UpdateEvent{ObjectOld: dep("12"), ObjectNew: dep("12")}) {
		t.Error("an echo is dropped only once: a second event of the same version (a resync) was dropped")
	}
	// Another kind or name with the same resourceVersion is not the echo.
	own.wrote(dep("13"), now)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pool", ResourceVersion: "13"}}
	if !p.Create(event.CreateEvent{Object: svc}) {
		t.Error("a Service event was taken for the Deployment's echo")
	}
	if !p.Delete(event.DeleteEvent{Object: dep("13")}) {
		t.Error("a deletion of a child was dropped")
	}
	if len(own.entries) != 0 {
		t.Errorf("a deleted child is still remembered: %v", own.entries)
	}
	// A write whose echo never came (delivered before the write returned) is
	// forgotten after echoMaxAge.
	own.wrote(dep("20"), now)
	own.wrote(svc, now.Add(2*echoMaxAge))
	if _, ok := own.entries[echoKeyOf(dep("20"))]; ok || len(own.entries) != 1 {
		t.Errorf("old entries kept: %v", own.entries)
	}
}
