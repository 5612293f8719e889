package datapath

import (
	"testing"

	"github.com/pvelb/pvelb/test/netlab"
)

// NewT is New for one test: the network is closed in t.Cleanup (before the
// lab and control plane made earlier in the test, since cleanups run last
// first), and when the test failed the end of every kube-proxy log is shown.
func NewT(t testing.TB, lab *netlab.Lab, opts Options) *Network {
	t.Helper()
	n, err := New(lab, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			n.mu.Lock()
			proxies := append([]*KubeProxy(nil), n.proxies...)
			n.mu.Unlock()
			for _, p := range proxies {
				t.Logf("kube-proxy on %s (%s), end of %s:\n%s", p.Node.Name, p.Mode, p.LogFile, p.Tail(4000))
			}
		}
		n.Close()
	})
	return n
}
