package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/instances"
	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
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

// testLocator locates VMs of region "east" through cl, uncached, on the
// locator's clock.
func testLocator(t *testing.T, cl pve.Client) *vmLocator {
	t.Helper()
	var l *vmLocator
	vms, err := instances.New(instances.Options{Regions: []instances.Region{{Name: "east", Client: cl}},
		Clock: func() time.Time { return l.now() }})
	if err != nil {
		t.Fatal(err)
	}
	l = newVMLocator(vms, vmRefreshPeriod)
	return l
}

// One pass over many Nodes of an unreachable Proxmox cluster asks it once,
// not once per Node (each ask may retry for up to 30s), and the error says
// the list failed so the caller retries later.
func TestVMLocatorUnreachableClusterIsAskedOncePerPass(t *testing.T) {
	cl := &listingClient{err: errUnreachable}
	l := testLocator(t, cl)
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

// A providerID missing from a VM list read moments ago is a VM created
// since: it is looked up in a fresh list at once (at most one list per
// missingRelistAfter), not after the 30s refresh period.
func TestVMLocatorRelistsForAMissingVM(t *testing.T) {
	cl := &listingClient{vms: []pve.VMResource{{Type: "qemu", VMID: 100, Node: "pve1"}}}
	l := testLocator(t, cl)
	now := time.Now()
	l.now = func() time.Time { return now }
	if _, err := l.Locate(context.Background(), "proxmox://east/100"); err != nil {
		t.Fatal(err)
	}
	cl.set(nil, []pve.VMResource{{Type: "qemu", VMID: 100, Node: "pve1"}, {Type: "qemu", VMID: 104, Node: "pve2"}})

	// Within missingRelistAfter of the last list: answered from it.
	_, err := l.Locate(context.Background(), "proxmox://east/104")
	if !errors.Is(err, errNotListed) {
		t.Fatalf("right after a list: want not listed, got %v", err)
	}
	if n := cl.count(); n != 1 {
		t.Fatalf("ClusterVMs called %d times, want 1 (one list per %v)", n, missingRelistAfter)
	}
	// After it: one fresh list finds the new VM; known VMs cost nothing.
	now = now.Add(missingRelistAfter)
	loc, err := l.Locate(context.Background(), "proxmox://east/104")
	if err != nil || loc.Ref.Node != "pve2" {
		t.Fatalf("new VM: %+v, %v", loc, err)
	}
	if _, err := l.Locate(context.Background(), "proxmox://east/100"); err != nil {
		t.Fatal(err)
	}
	if n := cl.count(); n != 2 {
		t.Fatalf("ClusterVMs called %d times, want 2", n)
	}
	// A providerID that is not pvelb's to find is not worth a retry.
	for _, id := range []string{"aws:///us-east-1a/i-0123", "proxmox://west/100"} {
		if _, err := l.Locate(context.Background(), id); err == nil || errors.Is(err, errNotListed) || errors.Is(err, errListFailed) {
			t.Errorf("%s: want a permanent error, got %v", id, err)
		}
	}
}

func firewallController(t *testing.T, cl pve.Client, nodes ...*v1.Node) *Controller {
	t.Helper()
	c, err := New(Options{
		Clients:    map[string]pve.Client{"east": cl},
		Firewall:   config.Firewall{Enabled: true},
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, n := range nodes {
		_ = idx.Add(n)
	}
	c.nodes = corelisters.NewNodeLister(idx)
	return c
}

// When a Node's VM could not be located for a reason that may pass (Proxmox
// did not answer, or did not list the VM yet), the desired state is
// recomputed later by itself: nothing else would bring that VM into the
// firewall's desired state.
func TestSyncDesiredRetriesWhileAVMMayAppear(t *testing.T) {
	cl := &listingClient{err: errUnreachable}
	w1 := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}, Spec: v1.NodeSpec{ProviderID: "proxmox://east/100"}}
	c := firewallController(t, cl, w1)
	if !c.syncDesired(context.Background()) {
		t.Fatal("Proxmox did not answer, but no retry")
	}

	cl.set(nil, []pve.VMResource{{Type: "qemu", VMID: 101, Node: "pve1"}})
	c.locator.failed = map[string]listFailure{}
	if !c.syncDesired(context.Background()) {
		t.Fatal("the Node's VM is not listed yet, but no retry")
	}

	cl.set(nil, []pve.VMResource{{Type: "qemu", VMID: 100, Node: "pve1"}})
	c.locator.listed = map[string]time.Time{}
	if c.syncDesired(context.Background()) {
		t.Fatal("a retry was asked although every VM was found")
	}
	if loc := c.nodeVMs["w1"]; loc.Ref.VMID != 100 {
		t.Fatalf("w1's VM not in the desired state: %+v", c.nodeVMs)
	}

	// Nodes pvelb cannot find a VM for, now or later, are no reason to retry.
	c = firewallController(t, cl,
		&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "new"}},
		&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "foreign"}, Spec: v1.NodeSpec{ProviderID: "aws:///us-east-1a/i-0123"}})
	if c.syncDesired(context.Background()) {
		t.Fatal("a retry was asked for Nodes without a providerID pvelb could ever find")
	}
}

// The desired-state loop finds a VM Proxmox lists late without any other
// change: the retry is the loop's own, through its workqueue.
func TestDesiredLoopFindsALateVM(t *testing.T) {
	cl := &listingClient{}
	w1 := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}, Spec: v1.NodeSpec{ProviderID: "proxmox://east/100"}}
	c := firewallController(t, cl, w1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.desired.run(ctx, c.syncDesired)
	c.kickDesired()
	for deadline := time.Now().Add(5 * time.Second); cl.count() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the desired state was never computed")
		}
	}
	cl.set(nil, []pve.VMResource{{Type: "qemu", VMID: 100, Node: "pve1"}})
	deadline := time.Now().Add(missingRelistAfter + 5*time.Second)
	for {
		c.mu.Lock()
		_, found := c.nodeVMs["w1"]
		c.mu.Unlock()
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("w1's VM, listed late, not found without another change (%d lists)", cl.count())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Cluster API Proxmox's proxmox://<uuid> names the VM by its smbios1 uuid:
// the locator finds it by reading VM configs, in any region, keeps its place
// for the refresh period and while Proxmox does not answer, and says
// "not listed" (worth a retry) when no VM has the uuid.
func TestVMLocatorUUIDProviderID(t *testing.T) {
	sim := pvesim.NewTestServer(t, pvesim.Options{})
	const uuid = "3f0e7a52-9b1c-4d2e-8f3a-5b6c7d8e9f01"
	for _, vm := range []pvesim.VM{
		{VMID: 101, Node: "pve1", Name: "other", UUID: "4a1f8b63-0c2d-4e3f-9a4b-6c7d8e9f0a12"},
		{VMID: 102, Node: "pve2", Name: "capi-w1", UUID: strings.ToUpper(uuid)},
	} {
		if err := sim.AddVM(vm); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := pve.New(pve.Options{Region: "east", URL: sim.URL, TokenID: sim.TokenID, TokenSecret: sim.TokenSecret,
		CAFile: sim.CAFile, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	l := testLocator(t, cl)
	now := time.Now()
	l.now = func() time.Time { return now }
	ctx := context.Background()

	loc, err := l.Locate(ctx, "proxmox://"+uuid)
	if err != nil || loc.Region != "east" || loc.Ref != (pve.VMRef{Node: "pve2", VMID: 102}) {
		t.Fatalf("Locate = %+v, %v; want east pve2/102", loc, err)
	}
	// Known: Proxmox not asked again within the refresh period, and the place
	// is kept while Proxmox does not answer.
	sim.ResetStats()
	sim.SetOutage(true)
	for _, at := range []time.Duration{0, vmRefreshPeriod} {
		now = now.Add(at)
		if loc, err := l.Locate(ctx, "proxmox://"+uuid); err != nil || loc.Ref.VMID != 102 {
			t.Fatalf("%v later, Proxmox down: %+v, %v; want the known place", at, loc, err)
		}
	}
	sim.SetOutage(false)
	if _, err := l.Locate(ctx, "proxmox://00000000-0000-0000-0000-0000000000aa"); !errors.Is(err, errNotListed) {
		t.Fatalf("unknown uuid: %v; want not listed", err)
	}
	sim.SetOutage(true)
	if _, err := l.Locate(ctx, "proxmox://00000000-0000-0000-0000-0000000000bb"); !errors.Is(err, errListFailed) {
		t.Fatalf("unknown uuid, Proxmox down: %v; want a list failure", err)
	}
}
