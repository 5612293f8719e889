package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/pvelb/pvelb/provider/pve"
)

// listingClient answers ClusterVMs only (the locator needs nothing else):
// with err while it is set, else with vms. It counts the calls.
type listingClient struct {
	pve.Client
	mu    sync.Mutex
	calls int
	err   error
	vms   []pve.VMResource
}

func (c *listingClient) ClusterVMs(context.Context) ([]pve.VMResource, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return c.vms, c.err
}

func (c *listingClient) set(err error, vms []pve.VMResource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err, c.vms = err, vms
}

func (c *listingClient) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

var errUnreachable = &pve.Error{Method: "GET", Path: "/cluster/resources", StatusCode: 595, Reason: "No route to host"}

// One pass over many Nodes of an unreachable Proxmox cluster asks it once,
// not once per Node (each ask may retry for up to 30s), and the error says
// the list failed so the caller retries later.
func TestVMLocatorUnreachableClusterIsAskedOncePerPass(t *testing.T) {
	cl := &listingClient{err: errUnreachable}
	l := newVMLocator(map[string]pve.Client{"east": cl}, vmRefreshPeriod)
	for id := 100; id < 150; id++ {
		_, err := l.Locate(context.Background(), fmt.Sprintf("proxmox://east/%d", id))
		if !errors.Is(err, errListFailed) {
			t.Fatalf("VM %d: want a list failure, got %v", id, err)
		}
	}
	if n := cl.count(); n != 1 {
		t.Fatalf("ClusterVMs called %d times for 50 Nodes in one pass, want 1", n)
	}

	// Once Proxmox answers again (after listRetryAfter) the VMs are found.
	cl.set(nil, []pve.VMResource{{Type: "qemu", VMID: 100, Node: "pve1", Name: "w1"}})
	now := l.now()
	l.now = func() time.Time { return now.Add(listRetryAfter) }
	loc, err := l.Locate(context.Background(), "proxmox://east/100")
	if err != nil || loc.Ref.Node != "pve1" {
		t.Fatalf("after recovery: %+v, %v", loc, err)
	}
	_, err = l.Locate(context.Background(), "proxmox://east/101")
	if err == nil || errors.Is(err, errListFailed) {
		t.Fatalf("a VM missing from a good list: want not-found, got %v", err)
	}
}

// When a Node's VM could not be located because Proxmox did not answer, the
// desired state is recomputed later by itself: nothing else would bring that
// VM into the firewall's desired state once Proxmox is back.
func TestSyncDesiredRetriesWhenProxmoxDidNotAnswer(t *testing.T) {
	cl := &listingClient{err: errUnreachable}
	c, err := New(Options{Clients: map[string]pve.Client{"east": cl}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = idx.Add(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}, Spec: v1.NodeSpec{ProviderID: "proxmox://east/100"}})
	c.nodes = corelisters.NewNodeLister(idx)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	c.syncDesired(ctx)
	if !c.desiredRetry.Load() {
		t.Fatal("Proxmox did not answer, but no later recomputation of the desired state is scheduled")
	}

	cancel()
	for deadline := time.Now().Add(5 * time.Second); c.desiredRetry.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pending retry did not end with its context")
		}
	}
	cl.set(nil, []pve.VMResource{{Type: "qemu", VMID: 100, Node: "pve1"}})
	c.locator.failed = map[string]listFailure{}
	c.syncDesired(context.Background())
	if c.desiredRetry.Load() {
		t.Fatal("a retry was scheduled although every VM was found")
	}
}
