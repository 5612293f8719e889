package loadbalancer

import (
	"context"
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/pvelb/pvelb/loadbalancer/eligibility"
	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/pve"
)

// writerEnv is an admittedWriter on a fake clientset whose Node cache is
// refreshed by hand after each write, as an informer would.
type writerEnv struct {
	t       *testing.T
	kube    *fake.Clientset
	idx     cache.Indexer
	w       *admittedWriter
	patches int
}

func newWriterEnv(t *testing.T, nodes ...*v1.Node) *writerEnv {
	e := &writerEnv{t: t, idx: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})}
	for _, n := range nodes {
		_ = e.idx.Add(n)
	}
	e.kube = fake.NewClientset()
	for _, n := range nodes {
		if _, err := e.kube.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e.kube.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		e.patches++
		return false, nil, nil
	})
	e.w = newAdmittedWriter(e.kube, corelisters.NewNodeLister(e.idx))
	t.Cleanup(e.w.queue.ShutDown)
	return e
}

// drain runs the queued writes and refreshes the cache.
func (e *writerEnv) drain() {
	e.t.Helper()
	for e.w.queue.Len() > 0 {
		name, _ := e.w.queue.Get()
		if err := e.w.sync(context.Background(), name); err != nil {
			e.t.Fatal(err)
		}
		e.w.queue.Done(name)
		n, err := e.kube.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		_ = e.idx.Update(n)
	}
}

func (e *writerEnv) annotation(name string) (string, bool) {
	n, err := e.kube.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	v, ok := n.Annotations[names.AnnotationAdmitted]
	return v, ok
}

// The annotation is written when what the VM admits changes, and only then:
// a resync that finds the same admission costs no API call.
func TestAdmittedWriterWritesOnlyChanges(t *testing.T) {
	e := newWriterEnv(t, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1", Annotations: map[string]string{"other": "kept"}}},
		&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w2"}})
	e.w.set("w1", ptr.To("192.0.2.10"))
	e.drain()
	if v, ok := e.annotation("w1"); !ok || v != "192.0.2.10" || e.patches != 1 {
		t.Fatalf("annotation %q %v after %d patches", v, ok, e.patches)
	}
	for range 3 { // resyncs
		e.w.set("w1", ptr.To("192.0.2.10"))
		e.drain()
	}
	if e.patches != 1 {
		t.Fatalf("%d patches for an unchanged admission, want 1", e.patches)
	}
	e.w.set("w1", ptr.To("192.0.2.10-192.0.2.11"))
	e.drain()
	if v, _ := e.annotation("w1"); v != "192.0.2.10-192.0.2.11" || e.patches != 2 {
		t.Fatalf("annotation %q after %d patches", v, e.patches)
	}
	e.w.set("w1", nil)
	e.drain()
	if _, ok := e.annotation("w1"); ok {
		t.Fatal("annotation not removed")
	}
	n, _ := e.kube.CoreV1().Nodes().Get(context.Background(), "w1", metav1.GetOptions{})
	if n.Annotations["other"] != "kept" {
		t.Errorf("other annotations touched: %v", n.Annotations)
	}
	// Nothing known of w2: left alone; a Node gone meanwhile is no error.
	e.w.nodeChanged("w2", false)
	e.w.set("gone", ptr.To(eligibility.Unfiltered))
	e.drain()
	if e.patches != 3 {
		t.Errorf("%d patches, want 3", e.patches)
	}
}

// A pass's admission goes to the Node whose VM it is now, and unknown or
// stale results leave the Node as it is.
func TestFirewallResultPublishesAdmission(t *testing.T) {
	e := newWriterEnv(t)
	c := &Controller{admitted: e.w, metrics: newMetrics(nil), fwFailing: reportOnce{}, nodeVMs: map[string]vmLocation{
		"w1": {Region: "lab", Ref: pve.VMRef{Node: "pve1", VMID: 101}},
		"w2": {Region: "lab", Ref: pve.VMRef{Node: "pve1", VMID: 102}},
		"w3": {Region: "lab", Ref: pve.VMRef{Node: "pve2", VMID: 103}},
		"w4": {Region: "lab", Ref: pve.VMRef{Node: "pve2", VMID: 104}},
	}}
	scope := func(node string, vmid int, a *firewall.Admission, retired bool) firewall.ScopeResult {
		return firewall.ScopeResult{Region: "lab", VM: &firewall.VMInfo{Ref: pve.VMRef{VMID: vmid}, Node: node, Retired: retired}, Admission: a}
	}
	vip := func(s string) netip.Prefix { a := netip.MustParseAddr(s); return netip.PrefixFrom(a, a.BitLen()) }
	c.onFirewallResult(firewall.Result{Scopes: []firewall.ScopeResult{
		{Region: "lab"},
		scope("w1", 101, &firewall.Admission{Prefixes: []netip.Prefix{vip("192.0.2.11"), vip("192.0.2.10")}}, false),
		scope("w2", 102, &firewall.Admission{Unfiltered: true}, false),
		scope("w3", 103, nil, false),                                            // unknown
		scope("w4", 999, &firewall.Admission{Unfiltered: true}, false),          // not w4's VM any more
		scope("w5", 105, &firewall.Admission{Prefixes: []netip.Prefix{}}, true), // retired
	}})
	want := map[string]string{"w1": "192.0.2.10-192.0.2.11", "w2": eligibility.Unfiltered}
	if len(e.w.want) != len(want) {
		t.Errorf("values for %d nodes, want %d: %v", len(e.w.want), len(want), e.w.want)
	}
	for n, v := range want {
		if got := e.w.want[n]; got == nil || *got != v {
			t.Errorf("%s: %v, want %q", n, got, v)
		}
	}
}
