package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
	"github.com/pvelb/pvelb/test/waitfor"
)

// These tests run the reconciler through the real client (pve.New) against
// the Proxmox simulator, which checks every request against the real API
// schema and keeps digests and locks like Proxmox.

const region = "east"

type simVM struct {
	id       int
	host     string
	name     string
	addr     string // the VM's own address
	ipfilter bool   // VM firewall option ipfilter
}

var threeVMs = []simVM{
	{101, "pve1", "talos-w1", "198.51.100.11", true},
	{102, "pve2", "talos-w2", "198.51.100.12", true},
	{103, "pve3", "talos-w3", "198.51.100.13", false},
}

type env struct {
	t       testing.TB
	sim     *pvesim.TestServer
	client  pve.Client
	wrapped *recordingClient
	reg     *prometheus.Registry
	rec     *Reconciler
	vms     []simVM
}

// newEnv starts the simulator with vms (each changed by tweak, when given,
// before it is added) and a reconciler on it.
func newEnv(t testing.TB, simOpts pvesim.Options, clientOpts pve.Options, opts Options, vms []simVM, tweak ...func(*pvesim.VM)) *env {
	t.Helper()
	sim := pvesim.NewTestServer(t, simOpts)
	for _, vm := range vms {
		v := pvesim.VM{
			VMID: vm.id, Node: vm.host, Name: vm.name, Cores: 2, Sockets: 1, MemoryMiB: 2048,
			Nets: map[int]string{0: fmt.Sprintf("virtio=BC:24:11:00:%02X:%02X,bridge=vmbr0,firewall=1", vm.id/256, vm.id%256)},
		}
		for _, f := range tweak {
			f(&v)
		}
		if err := sim.AddVM(v); err != nil {
			t.Fatalf("AddVM %d: %v", vm.id, err)
		}
		sim.SetFirewallOptions(vm.id, true, vm.ipfilter)
	}
	clientOpts.Region = region
	clientOpts.URL, clientOpts.CAFile = sim.URL, sim.CAFile
	clientOpts.TokenID, clientOpts.TokenSecret = sim.TokenID, sim.TokenSecret
	c, err := pve.New(clientOpts)
	if err != nil {
		t.Fatalf("pve.New: %v", err)
	}
	e := &env{t: t, sim: sim, client: c, wrapped: &recordingClient{Client: c}, reg: prometheus.NewRegistry(), vms: slices.Clone(vms)}
	opts.Metrics = NewMetrics(e.reg)
	e.rec, err = New(map[string]pve.Client{region: e.wrapped}, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

// service is one Service's VIPs, for building a Desired.
type service struct {
	name string
	vips []string
}

// desired admits every service's VIPs on every VM.
func (e *env) desired(svcs ...service) Desired {
	var d Desired
	var all []netip.Addr
	for _, s := range svcs {
		for _, v := range s.vips {
			a := netip.MustParseAddr(v)
			d.VIPs = append(d.VIPs, VIP{Addr: a, Services: []string{s.name}})
			all = append(all, a)
		}
	}
	for _, vm := range e.vms {
		d.VMs = append(d.VMs, VM{Region: region, Ref: pve.VMRef{Node: vm.host, VMID: vm.id}, Name: vm.name,
			Node: strings.TrimPrefix(vm.name, "talos-"), Addresses: addrs(vm.addr), VIPs: all})
	}
	return d
}

func (e *env) pass(d Desired) Result {
	e.t.Helper()
	if err := e.rec.SetDesired(d); err != nil {
		e.t.Fatalf("SetDesired: %v", err)
	}
	return e.rec.Reconcile(context.Background())
}

func (e *env) mustPass(d Desired) Result {
	e.t.Helper()
	res := e.pass(d)
	if err := res.Err(); err != nil {
		e.t.Fatalf("reconcile failed: %v", err)
	}
	return res
}

func vmScope(vm simVM) pve.Scope { return pve.VMScope(pve.VMRef{Node: vm.host, VMID: vm.id}) }

// entries renders a set as "cidr[comment]" strings, sorted.
func (e *env) entries(scope pve.Scope, set string) []string {
	var out []string
	for _, en := range e.sim.IPSetEntries(scope, set) {
		out = append(out, en.CIDR+"["+en.Comment+"]")
	}
	slices.Sort(out)
	return out
}

func (e *env) expect(scope pve.Scope, set string, want ...string) {
	e.t.Helper()
	slices.Sort(want)
	if got := e.entries(scope, set); !slices.Equal(got, want) {
		e.t.Fatalf("set %s of %v:\n got %q\nwant %q", set, scopeName(scope), got, want)
	}
}

func scopeName(s pve.Scope) string {
	if s.VM == nil {
		return "cluster"
	}
	return fmt.Sprintf("VM %d", s.VM.VMID)
}

func TestSimUserEntriesSurviveAndNothingOfOursIsLeft(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs)
	w1, w2, w3 := vmScope(threeVMs[0]), vmScope(threeVMs[1]), vmScope(threeVMs[2])
	// The user's own entries: a cluster set they share with pvelb, and an
	// ipfilter set on w1 that already admits the VM and a user network.
	e.sim.SeedIPSet(pve.ClusterScope, "pvelb-vips", pve.IPSetEntry{CIDR: "203.0.113.0/24", Comment: "office"})
	e.sim.SeedIPSet(w1, "ipfilter-net0",
		pve.IPSetEntry{CIDR: "198.51.100.11", Comment: "w1 itself"},
		pve.IPSetEntry{CIDR: "192.0.2.128/25", Comment: "user-admitted range"})

	svcs := []service{
		{"default/web", []string{"192.0.2.10", "2001:db8::10"}},
		{"default/api", []string{"192.0.2.11"}},
		{"shop/front", []string{"192.0.2.200"}}, // inside the user's range on w1
	}
	res := e.mustPass(e.desired(svcs...))

	e.expect(pve.ClusterScope, "pvelb-vips", "203.0.113.0/24[office]",
		"192.0.2.10[pvelb: default/web]", "2001:db8::10[pvelb: default/web]",
		"192.0.2.11[pvelb: default/api]", "192.0.2.200[pvelb: shop/front]")
	// w1: the set existed, so VIPs were added; the one the user's range covers was not.
	e.expect(w1, "ipfilter-net0", "198.51.100.11[w1 itself]", "192.0.2.128/25[user-admitted range]",
		"192.0.2.10[pvelb: default/web]", "2001:db8::10[pvelb: default/web]", "192.0.2.11[pvelb: default/api]")
	// w2: ipfilter on and no set: created, seeded with the VM's own address first.
	e.expect(w2, "ipfilter-net0", "198.51.100.12["+SeedComment+"]",
		"192.0.2.10[pvelb: default/web]", "2001:db8::10[pvelb: default/web]", "192.0.2.11[pvelb: default/api]",
		"192.0.2.200[pvelb: shop/front]")
	// w3: ipfilter off and no set: the filter is inactive, nothing written.
	e.expect(w3, "ipfilter-net0")
	if s, ok := res.Set(region, w3.VM, "ipfilter-net0"); !ok || s.State != SetFilterInactive || writes(&s) != 0 {
		t.Fatalf("w3 set result = %+v, want FilterInactive without writes", s)
	}

	// Steady state: a second pass writes nothing at all (counted by the simulator).
	e.sim.ResetStats()
	res = e.mustPass(e.desired(svcs...))
	if got := e.sim.Stats().Writes; got != 0 || res.Writes() != 0 {
		t.Fatalf("steady state wrote %d times (result says %d), want 0; by path %v", got, res.Writes(), e.sim.Stats().ByPath)
	}

	// A user adds an entry to pvelb's own set on w2; removing a service must keep it.
	e.sim.SeedIPSet(w2, "ipfilter-net0", pve.IPSetEntry{CIDR: "203.0.113.9", Comment: "monitoring"})
	e.mustPass(e.desired(svcs[0], svcs[2]))
	e.expect(w2, "ipfilter-net0", "198.51.100.12["+SeedComment+"]", "203.0.113.9[monitoring]",
		"192.0.2.10[pvelb: default/web]", "2001:db8::10[pvelb: default/web]", "192.0.2.200[pvelb: shop/front]")

	// Everything deleted: only user entries and the seed remain.
	e.mustPass(e.desired())
	e.expect(pve.ClusterScope, "pvelb-vips", "203.0.113.0/24[office]")
	e.expect(w1, "ipfilter-net0", "198.51.100.11[w1 itself]", "192.0.2.128/25[user-admitted range]")
	e.expect(w2, "ipfilter-net0", "198.51.100.12["+SeedComment+"]", "203.0.113.9[monitoring]")
	e.expect(w3, "ipfilter-net0")

	// And back again: add/remove cycles are repeatable.
	e.mustPass(e.desired(svcs...))
	e.mustPass(e.desired())
	e.expect(w1, "ipfilter-net0", "198.51.100.11[w1 itself]", "192.0.2.128/25[user-admitted range]")
	if n := counter(t, e.reg, "pvelb_firewall_writes_total", "kind", "delete"); n == 0 {
		t.Fatalf("delete writes not counted in metrics")
	}
}

func TestSimSharedIPComment(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:1])
	d := e.desired(service{"default/web", []string{"192.0.2.10"}})
	d.VIPs = append(d.VIPs, VIP{Addr: netip.MustParseAddr("192.0.2.10"), Services: []string{"default/api"}})
	res := e.mustPass(d)
	e.expect(pve.ClusterScope, "pvelb-vips", "192.0.2.10[pvelb: default/api,default/web]")
	if got := res.ServiceErrors(); len(got) != 0 {
		t.Fatalf("ServiceErrors on success = %v", got)
	}
}

func TestSimDriftIsRepaired(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:2])
	d := e.desired(service{"default/web", []string{"192.0.2.10"}})
	e.mustPass(d)
	w2 := vmScope(threeVMs[1])

	// Someone removes pvelb's entry by hand (through the API, like a user would).
	if err := e.client.DeleteIPSetEntry(context.Background(), w2, "ipfilter-net0", "192.0.2.10", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.client.DeleteIPSetEntry(context.Background(), pve.ClusterScope, "pvelb-vips", "192.0.2.10", ""); err != nil {
		t.Fatal(err)
	}
	res := e.mustPass(d)
	if res.Writes() != 2 {
		t.Fatalf("repair made %d writes, want 2", res.Writes())
	}
	e.expect(w2, "ipfilter-net0", "198.51.100.12["+SeedComment+"]", "192.0.2.10[pvelb: default/web]")
	e.expect(pve.ClusterScope, "pvelb-vips", "192.0.2.10[pvelb: default/web]")
	if n := counter(t, e.reg, "pvelb_firewall_drift_repairs_total"); n != 2 {
		t.Fatalf("drift repairs = %v, want 2", n)
	}
}

func TestSimOutageNamesTheVMAndNextPassSucceeds(t *testing.T) {
	// No client retries, so the outage is seen at once.
	e := newEnv(t, pvesim.Options{}, pve.Options{MaxRetries: -1}, Options{}, threeVMs)
	d := e.desired(service{"default/web", []string{"192.0.2.10"}}, service{"default/api", []string{"192.0.2.11"}})

	e.sim.SetOutage(true)
	res := e.pass(d)
	failed := res.Failed()
	if len(failed) != 4 { // cluster + three VMs
		t.Fatalf("%d scopes failed, want 4: %v", len(failed), res.Err())
	}
	msg := res.Err().Error()
	for _, want := range []string{`proxmox cluster "east" VM 101 on host pve1 (name talos-w1, node w1): ipset ipfilter-net0`,
		"VM 103 on host pve3", "503", `proxmox cluster "east": ipset pvelb-vips`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, e.sim.TokenSecret) {
		t.Fatalf("error leaks the token secret")
	}
	var fe *Error
	if !errors.As(failed[1].Err, &fe) || fe.VM == nil || fe.VM.Ref.VMID != 101 || fe.Reason != "transient" {
		t.Fatalf("first VM error = %#v, want *Error for VM 101, reason transient", fe)
	}
	se := res.ServiceErrors()
	if len(se["default/web"]) != 4 || len(se["default/api"]) != 4 {
		t.Fatalf("ServiceErrors = %v, want 4 errors for each service", se)
	}
	if n := counter(t, e.reg, "pvelb_firewall_reconcile_errors_total", "reason", "transient"); n != 4 {
		t.Fatalf("transient errors counted %v, want 4", n)
	}
	if n := gauge(t, e.reg, "pvelb_firewall_last_successful_reconcile_timestamp_seconds"); n != 0 {
		t.Fatalf("last success set after a failed pass")
	}

	e.sim.SetOutage(false)
	res = e.mustPass(d)
	if res.Writes() == 0 {
		t.Fatal("recovery pass wrote nothing")
	}
	e.expect(vmScope(threeVMs[0]), "ipfilter-net0", "198.51.100.11["+SeedComment+"]",
		"192.0.2.10[pvelb: default/web]", "192.0.2.11[pvelb: default/api]")
	if n := gauge(t, e.reg, "pvelb_firewall_last_successful_reconcile_timestamp_seconds"); n < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last success timestamp = %v", n)
	}
}

func TestSimRefusedWithoutOwnAddress(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:1])
	d := e.desired(service{"default/web", []string{"192.0.2.10"}})
	d.VMs[0].Addresses = nil
	res := e.pass(d)
	var fe *Error
	if !errors.As(res.Err(), &fe) || fe.Reason != "unsafe" || !strings.Contains(fe.Error(), "cut the VM off") {
		t.Fatalf("err = %v, want an unsafe refusal", res.Err())
	}
	if got := e.sim.IPSetEntries(vmScope(threeVMs[0]), "ipfilter-net0"); len(got) != 0 {
		t.Fatalf("set written although refused: %v", got)
	}
}

// A user edits the set between pvelb's read and its delete: the digest makes
// Proxmox refuse the delete, pvelb re-reads, and the user's edit stands.
func TestSimUserEditBetweenReadAndDelete(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:1])
	w1 := vmScope(threeVMs[0])
	e.mustPass(e.desired(service{"default/web", []string{"192.0.2.10"}}, service{"default/api", []string{"192.0.2.11"}}))

	// Case 1: the user adds an entry just before pvelb deletes 192.0.2.11.
	var edits int
	e.wrapped.beforeDelete = func(scope pve.Scope, set, cidr string) {
		if scope.VM == nil || cidr != "192.0.2.11" || edits > 0 {
			return
		}
		edits++
		if err := e.client.AddIPSetEntry(context.Background(), scope, set, pve.IPSetEntry{CIDR: "203.0.113.50", Comment: "added meanwhile"}); err != nil {
			t.Errorf("user add: %v", err)
		}
	}
	e.mustPass(e.desired(service{"default/web", []string{"192.0.2.10"}}))
	if edits != 1 || e.wrapped.conflicts() == 0 {
		t.Fatalf("edits %d, conflicts %d: the race was not exercised", edits, e.wrapped.conflicts())
	}
	e.expect(w1, "ipfilter-net0", "198.51.100.11["+SeedComment+"]", "192.0.2.10[pvelb: default/web]", "203.0.113.50[added meanwhile]")

	// Case 2: the user takes over pvelb's stale entry (removes it and adds it
	// back with their own comment) just before pvelb deletes it.
	e.wrapped.resetConflicts()
	edits = 0
	e.wrapped.beforeDelete = func(scope pve.Scope, set, cidr string) {
		if scope.VM == nil || cidr != "192.0.2.10" || edits > 0 {
			return
		}
		edits++
		ctx := context.Background()
		if err := e.client.DeleteIPSetEntry(ctx, scope, set, cidr, ""); err != nil {
			t.Errorf("user delete: %v", err)
		}
		if err := e.client.AddIPSetEntry(ctx, scope, set, pve.IPSetEntry{CIDR: cidr, Comment: "mine now"}); err != nil {
			t.Errorf("user add: %v", err)
		}
	}
	e.mustPass(e.desired())
	if edits != 1 || e.wrapped.conflicts() == 0 {
		t.Fatalf("edits %d, conflicts %d: the race was not exercised", edits, e.wrapped.conflicts())
	}
	e.expect(w1, "ipfilter-net0", "198.51.100.11["+SeedComment+"]", "192.0.2.10[mine now]", "203.0.113.50[added meanwhile]")
	e.expect(pve.ClusterScope, "pvelb-vips")
}

func TestSimConcurrentVMWrites(t *testing.T) {
	var vms []simVM
	for i := range 6 {
		vms = append(vms, simVM{200 + i, fmt.Sprintf("pve%d", i%3+1), fmt.Sprintf("talos-w%d", i), fmt.Sprintf("198.51.100.%d", 20+i), true})
	}
	e := newEnv(t, pvesim.Options{WriteLatency: 30 * time.Millisecond}, pve.Options{}, Options{Concurrency: 4}, vms)
	var vips []string
	for i := range 5 {
		vips = append(vips, fmt.Sprintf("192.0.2.%d", 10+i))
	}
	e.mustPass(e.desired(service{"default/web", vips}))
	maxAll, maxScope := e.wrapped.peaks()
	if maxAll < 2 || maxAll > 4 {
		t.Fatalf("at most %d writes were in flight at once, want 2..4 (Concurrency)", maxAll)
	}
	if maxScope != 1 {
		t.Fatalf("%d writes to one scope were in flight at once, want 1", maxScope)
	}
	for _, vm := range vms {
		if n := len(e.sim.IPSetEntries(vmScope(vm), "ipfilter-net0")); n != 6 {
			t.Fatalf("VM %d has %d entries, want 6 (seed + 5 VIPs)", vm.id, n)
		}
	}
}

// A VM that leaves the desired state (its Node deleted or excluded) gets
// pvelb's entries removed.
func TestSimRetiredVMIsCleaned(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:2])
	d := e.desired(service{"default/web", []string{"192.0.2.10"}})
	e.mustPass(d)
	w2 := vmScope(threeVMs[1])
	d.VMs = d.VMs[:1]
	res := e.mustPass(d)
	e.expect(w2, "ipfilter-net0", "198.51.100.12["+SeedComment+"]")
	found := false
	for _, s := range res.Scopes {
		found = found || (s.VM != nil && s.VM.Retired && s.VM.Ref.VMID == 102)
	}
	if !found {
		t.Fatal("retired VM not in result")
	}
	// Once clean it is forgotten: the next pass has no scope for it.
	res = e.mustPass(d)
	for _, s := range res.Scopes {
		if s.VM != nil && s.VM.Ref.VMID == 102 {
			t.Fatal("retired VM reconciled again after it was clean")
		}
	}
}

func TestSimAdmitRanges(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{AdmitRanges: true}, threeVMs[:2])
	w1 := vmScope(threeVMs[0])
	d := e.desired(service{"default/web", []string{"192.0.2.10"}})
	d.Ranges = []PoolRange{{Pool: "blue", First: netip.MustParseAddr("192.0.2.8"), Last: netip.MustParseAddr("192.0.2.23")}}
	e.mustPass(d)
	e.expect(w1, "ipfilter-net0", "198.51.100.11["+SeedComment+"]", "192.0.2.8/29[pvelb: pool blue]", "192.0.2.16/29[pvelb: pool blue]")

	// More VIPs in the same pool cost no writes.
	d2 := e.desired(service{"default/web", []string{"192.0.2.10"}}, service{"default/api", []string{"192.0.2.20", "192.0.2.21"}})
	d2.Ranges = d.Ranges
	if res := e.mustPass(d2); res.Writes() != 0 {
		t.Fatalf("VIPs inside an admitted range wrote %d times", res.Writes())
	}
	// The last VIP gone: the range entries go too.
	d3 := e.desired()
	d3.Ranges = d.Ranges
	e.mustPass(d3)
	e.expect(w1, "ipfilter-net0", "198.51.100.11["+SeedComment+"]")
	e.expect(pve.ClusterScope, "pvelb-vips")
}

func TestSimRunRepairsDriftPeriodically(t *testing.T) {
	results := make(chan Result, 100)
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{ResyncPeriod: 200 * time.Millisecond,
		OnResult: func(r Result) {
			select {
			case results <- r:
			default:
			}
		}}, threeVMs[:1])
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.rec.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	if err := e.rec.SetDesired(e.desired(service{"default/web", []string{"192.0.2.10"}})); err != nil {
		t.Fatal(err)
	}
	w1 := vmScope(threeVMs[0])
	waitfor.Until(t, 10*time.Second, "VIP admitted", func() bool {
		return slices.Contains(e.entries(w1, "ipfilter-net0"), "192.0.2.10[pvelb: default/web]")
	})
	if err := e.client.DeleteIPSetEntry(context.Background(), w1, "ipfilter-net0", "192.0.2.10", ""); err != nil {
		t.Fatal(err)
	}
	// No SetDesired: only the periodic resync can bring it back.
	waitfor.Until(t, 10*time.Second, "drift repaired", func() bool {
		return slices.Contains(e.entries(w1, "ipfilter-net0"), "192.0.2.10[pvelb: default/web]")
	})
	if len(results) == 0 {
		t.Fatal("OnResult never called")
	}
}

// Before the first SetDesired a pass touches nothing, so a restarting
// controller does not remove VIPs it has not re-learnt yet.
func TestSimNothingBeforeFirstDesired(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:1])
	e.sim.SeedIPSet(pve.ClusterScope, "pvelb-vips", pve.IPSetEntry{CIDR: "192.0.2.10", Comment: "pvelb: default/web"})
	e.sim.ResetStats()
	if res := e.rec.Reconcile(context.Background()); !res.NotReady {
		t.Fatal("pass without desired state was not NotReady")
	}
	if s := e.sim.Stats(); s.Requests != 0 {
		t.Fatalf("%d requests before the first desired state", s.Requests)
	}
}

// recordingClient wraps the real client to observe write concurrency and to
// let a test act between pvelb's read and its delete.
type recordingClient struct {
	pve.Client
	beforeDelete func(scope pve.Scope, set, cidr string)

	mu        sync.Mutex
	inFlight  int
	perScope  map[string]int
	maxAll    int
	maxScope  int
	conflictN int
}

func (c *recordingClient) enter(scope pve.Scope) func() {
	key := scopeName(scope)
	c.mu.Lock()
	if c.perScope == nil {
		c.perScope = map[string]int{}
	}
	c.inFlight++
	c.perScope[key]++
	c.maxAll = max(c.maxAll, c.inFlight)
	c.maxScope = max(c.maxScope, c.perScope[key])
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.inFlight--
		c.perScope[key]--
		c.mu.Unlock()
	}
}

func (c *recordingClient) peaks() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxAll, c.maxScope
}

func (c *recordingClient) conflicts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conflictN
}

func (c *recordingClient) resetConflicts() {
	c.mu.Lock()
	c.conflictN = 0
	c.mu.Unlock()
}

func (c *recordingClient) CreateIPSet(ctx context.Context, scope pve.Scope, name, comment string) error {
	defer c.enter(scope)()
	return c.Client.CreateIPSet(ctx, scope, name, comment)
}

func (c *recordingClient) AddIPSetEntry(ctx context.Context, scope pve.Scope, name string, entry pve.IPSetEntry) error {
	defer c.enter(scope)()
	return c.Client.AddIPSetEntry(ctx, scope, name, entry)
}

func (c *recordingClient) DeleteIPSetEntry(ctx context.Context, scope pve.Scope, name, cidr, digest string) error {
	if c.beforeDelete != nil {
		c.beforeDelete(scope, name, cidr)
	}
	defer c.enter(scope)()
	err := c.Client.DeleteIPSetEntry(ctx, scope, name, cidr, digest)
	if pve.IsConflict(err) {
		c.mu.Lock()
		c.conflictN++
		c.mu.Unlock()
	}
	return err
}

func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

func counter(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	if m := metric(t, reg, name, labels...); m != nil {
		return m.GetCounter().GetValue()
	}
	return 0
}

func gauge(t testing.TB, reg *prometheus.Registry, name string) float64 {
	if m := metric(t, reg, name); m != nil {
		return m.GetGauge().GetValue()
	}
	return 0
}

// A retired VM that was deleted in Proxmox has nothing left to clean: the
// pass succeeds and the VM is forgotten.
func TestSimRetiredVMDeletedInProxmox(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:2])
	d := e.desired(service{"default/web", []string{"192.0.2.10"}})
	e.mustPass(d)
	e.sim.DeleteVM(102)
	d.VMs = d.VMs[:1]
	// Proxmox removed the VM's .fw with it: the set reads as missing, which
	// with nothing wanted is in sync.
	e.mustPass(d)
	for _, s := range e.mustPass(d).Scopes {
		if s.VM != nil && s.VM.Ref.VMID == 102 {
			t.Fatal("deleted VM still reconciled")
		}
	}
}

// Each Proxmox cluster (region) gets its own cluster set with every VIP, and
// each VM is written through its own region's client.
func TestSimTwoRegions(t *testing.T) {
	east := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:1])
	west := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[1:2])
	rec, err := New(map[string]pve.Client{"east": east.client, "west": west.client}, Options{ClusterSet: "k8s-vips"})
	if err != nil {
		t.Fatal(err)
	}
	d := east.desired(service{"default/web", []string{"192.0.2.10"}})
	d.VMs = append(d.VMs, VM{Region: "west", Ref: pve.VMRef{Node: "pve2", VMID: 102}, Addresses: addrs("198.51.100.12"),
		VIPs: addrs("192.0.2.10")})
	if err := rec.SetDesired(d); err != nil {
		t.Fatal(err)
	}
	if err := rec.Reconcile(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*env{east, west} {
		e.expect(pve.ClusterScope, "k8s-vips", "192.0.2.10[pvelb: default/web]")
	}
	east.expect(vmScope(threeVMs[0]), "ipfilter-net0", "198.51.100.11["+SeedComment+"]", "192.0.2.10[pvelb: default/web]")
	west.expect(vmScope(threeVMs[1]), "ipfilter-net0", "198.51.100.12["+SeedComment+"]", "192.0.2.10[pvelb: default/web]")

	d.VMs[1].Region = "north"
	if err := rec.SetDesired(d); err == nil || !strings.Contains(err.Error(), `region "north"`) {
		t.Fatalf("unknown region: err = %v", err)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	c := map[string]pve.Client{"east": &recordingClient{}}
	for _, tt := range []struct {
		opts Options
		err  string
	}{
		{Options{ClusterSet: "VIPs"}, "clusterSet"},
		{Options{NICs: []string{"eth0"}}, "nics[0]"},
		{Options{Concurrency: -1}, "concurrency"},
		{Options{ResyncPeriod: -time.Second}, "resyncPeriod"},
	} {
		if _, err := New(c, tt.opts); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("New(%+v) = %v, want error naming %s", tt.opts, err, tt.err)
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New without clients succeeded")
	}
	r, err := New(c, Options{NICs: []string{"net0", "net1", "net0"}})
	if err != nil || !slices.Equal(r.vmSets, []string{"ipfilter-net0", "ipfilter-net1"}) || r.opts.ClusterSet != config.DefaultClusterIPSet {
		t.Fatalf("defaults: %v %+v", err, r)
	}
}

// A lock timeout on one write is retried by the client (bounded); a lasting
// one fails the VM's scope only, naming the lock, while other VMs succeed.
func TestSimLockTimeouts(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{RetryBackoff: time.Millisecond, MaxRetries: 2}, Options{}, threeVMs[:2])
	lockTimeout := "cfs-lock 'firewall-vm-101' error: got lock request timeout"
	e.sim.InjectFault(pvesim.Fault{Method: "POST", PathPrefix: "/nodes/pve1/qemu/101/firewall/ipset", Reason: lockTimeout, Count: 1})
	d := e.desired(service{"default/web", []string{"192.0.2.10"}})
	e.mustPass(d)
	e.expect(vmScope(threeVMs[0]), "ipfilter-net0", "198.51.100.11["+SeedComment+"]", "192.0.2.10[pvelb: default/web]")

	// Lasting: more failures than the client's retries.
	e.sim.InjectFault(pvesim.Fault{Method: "POST", PathPrefix: "/nodes/pve1/qemu/101/firewall/ipset", Reason: lockTimeout, Count: 10})
	d2 := e.desired(service{"default/web", []string{"192.0.2.10"}}, service{"default/api", []string{"192.0.2.11"}})
	res := e.pass(d2)
	failed := res.Failed()
	if len(failed) != 1 || failed[0].VM == nil || failed[0].VM.Ref.VMID != 101 || !strings.Contains(failed[0].Err.Error(), "got lock request timeout") {
		t.Fatalf("failed scopes = %+v, want only VM 101 with the lock timeout", failed)
	}
	e.expect(vmScope(threeVMs[1]), "ipfilter-net0", "198.51.100.12["+SeedComment+"]",
		"192.0.2.10[pvelb: default/web]", "192.0.2.11[pvelb: default/api]")
	e.sim.ClearFaults()
	e.mustPass(d2)
	e.expect(vmScope(threeVMs[0]), "ipfilter-net0", "198.51.100.11["+SeedComment+"]",
		"192.0.2.10[pvelb: default/web]", "192.0.2.11[pvelb: default/api]")
}

// A live-migrated VM shows up under a new host with the same VM id. Proxmox
// keeps one firewall file per VM id, whatever host the path names, so the old
// (host, id) must not be cleaned as a retired VM: that would strip the VIPs
// the VM still announces until the next resync.
func TestSimMigratedVMKeepsItsVIPs(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{Concurrency: 1}, threeVMs[:1])
	d := e.desired(service{"default/web", []string{"192.0.2.10"}})
	e.mustPass(d)
	e.sim.MoveVM(101, "pve2")
	d.VMs[0].Ref.Node = "pve2"
	res := e.mustPass(d)
	moved := pve.VMScope(pve.VMRef{Node: "pve2", VMID: 101})
	e.expect(moved, "ipfilter-net0", "198.51.100.11["+SeedComment+"]", "192.0.2.10["+ServicesComment([]string{"default/web"})+"]")
	for _, s := range res.Scopes {
		if s.VM != nil && s.VM.Retired {
			t.Errorf("the migrated VM's old place was reconciled as retired: %+v", s.VM)
		}
	}
}

// A set pvelb creates replaces what Proxmox admits without one. Under the
// nftables firewall that default is link-local plus the NIC's cloud-init
// ip/ip6, so the new set is seeded with those too (a static ip6 the Node
// does not report would be cut off otherwise), and each NIC's set with what
// the guest agent reports on that NIC, not the Node's addresses on another.
func TestSimSeedsWhatTheNICCarries(t *testing.T) {
	vip := service{"default/web", []string{"192.0.2.10"}}
	t.Run("cloud-init ip6 beside the Node address", func(t *testing.T) {
		e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:1], func(v *pvesim.VM) {
			v.IPConfigs = map[int]string{0: "ip=198.51.100.11/24,gw=198.51.100.1,ip6=2001:db8::11/64"}
		})
		e.mustPass(e.desired(vip))
		e.expect(vmScope(threeVMs[0]), "ipfilter-net0",
			"198.51.100.11["+SeedComment+"]", "2001:db8::11["+SeedComment+"]", "192.0.2.10[pvelb: default/web]")
	})
	t.Run("no Node address, cloud-init address known", func(t *testing.T) {
		e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:1], func(v *pvesim.VM) {
			v.IPConfigs = map[int]string{0: "ip=198.51.100.11/24"}
		})
		d := e.desired(vip)
		d.VMs[0].Addresses = nil
		e.mustPass(d)
		e.expect(vmScope(threeVMs[0]), "ipfilter-net0", "198.51.100.11["+SeedComment+"]", "192.0.2.10[pvelb: default/web]")
	})
	t.Run("each NIC its own addresses from the agent", func(t *testing.T) {
		const mac0, mac1 = "BC:24:11:00:00:65", "BC:24:11:00:01:65"
		e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{NICs: []string{"net0", "net1"}}, threeVMs[:1], func(v *pvesim.VM) {
			v.Nets[1] = "virtio=" + mac1 + ",bridge=vmbr1,firewall=1"
			v.Agent = []pvesim.AgentIface{
				{Name: "lo", MAC: "00:00:00:00:00:00", Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
				{Name: "eth0", MAC: mac0, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.11/24"), netip.MustParsePrefix("fe80::be24:11ff:fe00:65/64")}},
				{Name: "eth1", MAC: mac1, Addrs: []netip.Prefix{netip.MustParsePrefix("203.0.113.50/24")}},
			}
		})
		e.mustPass(e.desired(vip))
		e.expect(vmScope(threeVMs[0]), "ipfilter-net0", "198.51.100.11["+SeedComment+"]", "192.0.2.10[pvelb: default/web]")
		e.expect(vmScope(threeVMs[0]), "ipfilter-net1", "203.0.113.50["+SeedComment+"]", "192.0.2.10[pvelb: default/web]")
	})
}

// A replica that starts knows only the Nodes there are now; a VM whose Node
// was deleted while no replica led keeps pvelb's entries, and may answer
// for the VIPs once repurposed, unless the VMs recorded before are retired.
// Known is what that record holds: every VM that may hold entries, until a
// retired one is clean.
func TestSimRetireFromRecord(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:2])
	d := e.desired(service{"default/web", []string{"192.0.2.10"}})
	e.mustPass(d)
	w2 := vmScope(threeVMs[1])
	e.expect(w2, "ipfilter-net0", "198.51.100.12["+SeedComment+"]", "192.0.2.10[pvelb: default/web]")
	record := e.rec.Known()
	if len(record) != 2 {
		t.Fatalf("Known = %v, want both VMs", record)
	}

	// The restart: a new reconciler, and w2's Node is gone.
	fresh, err := New(map[string]pve.Client{region: e.client}, Options{Metrics: NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	d.VMs = d.VMs[:1]
	if err := fresh.SetDesired(d); err != nil {
		t.Fatal(err)
	}
	fresh.Retire(append(record, VM{Region: "elsewhere", Ref: pve.VMRef{Node: "x", VMID: 999}}))
	if got := fresh.Known(); len(got) != 2 {
		t.Fatalf("Known after Retire = %v, want w1 desired and w2 retired (the unconfigured region skipped)", got)
	}
	if err := fresh.Reconcile(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	e.expect(w2, "ipfilter-net0", "198.51.100.12["+SeedComment+"]")
	e.expect(vmScope(threeVMs[0]), "ipfilter-net0", "198.51.100.11["+SeedComment+"]", "192.0.2.10[pvelb: default/web]")
	if got := fresh.Known(); len(got) != 1 || got[0].Ref.VMID != 101 {
		t.Fatalf("Known once w2 is clean = %v, want w1 only", got)
	}
}
