package netlab

import (
	"fmt"
	"testing"
)

// AddNode adds one more node namespace (node<N+1> at .<11+N>) to a running
// lab, as a VM joining the cluster, with kube-proxy's strictARP emulation
// when strictARP is set. It is torn down with the lab.
func (l *Lab) AddNode(t testing.TB, strictARP bool) *Host {
	t.Helper()
	i := len(l.Nodes) + 1
	if i > 50 {
		t.Fatalf("netlab: at most 50 nodes")
	}
	h, err := l.addHost(fmt.Sprintf("node%d", i), 10+i)
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	if strictARP {
		if err := h.emulateStrictARP(); err != nil {
			t.Fatalf("netlab: %v", err)
		}
	}
	l.mu.Lock()
	l.Nodes = append(l.Nodes, h)
	l.mu.Unlock()
	return h
}
