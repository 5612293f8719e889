package announcer

import (
	"context"
	"testing"
)

// A responder pair whose socket failed must be dropped by the next reconcile
// so it is reopened; one that is still serving must be kept.
func TestReapStoppedResponders(t *testing.T) {
	failed := &l2{cancel: func() {}, done: make(chan struct{})}
	close(failed.done)
	_, cancel := context.WithCancel(context.Background())
	serving := &l2{cancel: cancel, done: make(chan struct{})}
	c := &Controller{responders: map[string]*l2{"eth0": failed, "eth1": serving}}

	c.reapStopped()

	if _, ok := c.responders["eth0"]; ok {
		t.Error("a responder whose socket failed was kept: its VIPs would go unanswered")
	}
	if c.responders["eth1"] != serving {
		t.Error("a serving responder was dropped")
	}
	if !failed.asked.Load() {
		t.Error("the failed pair was not closed")
	}
}
