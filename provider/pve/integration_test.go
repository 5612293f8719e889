package pve_test

// Integration tests: the real client against the Proxmox simulator, which
// validates every request against the real API schema. They live in package
// pve_test because pvesim imports pve.

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

const (
	uuidCP1 = "6f1c2b9e-6d0a-4a44-9a55-3c1f0e2d7b10"
	macCP1  = "BC:24:11:00:01:00"
)

var cp1 = pve.VMRef{Node: "pve1", VMID: 101}

// newSim starts a simulator with two VMs and returns it with a client that
// uses its token and CA.
func newSim(t *testing.T, simOpts pvesim.Options, mutate func(*pve.Options)) (*pvesim.TestServer, pve.Client) {
	t.Helper()
	ts := pvesim.NewTestServer(t, simOpts)
	mustAddVM(t, ts, pvesim.VM{
		VMID: 101, Node: "pve1", Name: "cp-1", UUID: uuidCP1, SKU: "c4.large",
		Cores: 2, Sockets: 2, MemoryMiB: 8192, Tags: "k8s;talos",
		Nets: map[int]string{0: "virtio=" + macCP1 + ",bridge=vmbr0,firewall=1", 1: "virtio=BC:24:11:00:01:01,bridge=vmbr1,tag=20"},
		Agent: []pvesim.AgentIface{
			{Name: "lo", MAC: "00:00:00:00:00:00", Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
			{Name: "eth0", MAC: macCP1, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/24"), netip.MustParsePrefix("2001:db8::11/64")}},
		},
	})
	mustAddVM(t, ts, pvesim.VM{VMID: 102, Node: "pve2", Name: "worker-1", Status: "stopped",
		Nets: map[int]string{0: "virtio=BC:24:11:00:02:00,bridge=vmbr0,firewall=1"}})
	return ts, newClient(t, ts, ts.TokenSecret, mutate)
}

func mustAddVM(t *testing.T, ts *pvesim.TestServer, vm pvesim.VM) {
	t.Helper()
	if err := ts.AddVM(vm); err != nil {
		t.Fatal(err)
	}
}

func newClient(t *testing.T, ts *pvesim.TestServer, secret string, mutate func(*pve.Options)) pve.Client {
	t.Helper()
	opts := pve.Options{
		Region: "sim", URL: ts.URL, TokenID: ts.TokenID, TokenSecret: secret, CAFile: ts.CAFile,
		Timeout: 5 * time.Second, RetryBackoff: 5 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&opts)
	}
	c, err := pve.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSimVMReads(t *testing.T) {
	ts, c := newSim(t, pvesim.Options{}, nil)
	ctx := context.Background()

	vms, err := c.ClusterVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []pve.VMResource{
		{VMID: 101, Node: "pve1", Name: "cp-1", Type: "qemu", Status: "running", MaxCPU: 4, MaxMem: 8192 << 20, Tags: "k8s;talos"},
		{VMID: 102, Node: "pve2", Name: "worker-1", Type: "qemu", Status: "stopped", MaxCPU: 1, MaxMem: 2048 << 20},
	}
	if !reflect.DeepEqual(vms, want) {
		t.Fatalf("ClusterVMs =\n%+v\nwant\n%+v", vms, want)
	}
	if vms[0].Ref() != cp1 {
		t.Fatalf("Ref = %+v", vms[0].Ref())
	}

	cfg, err := c.VMConfig(ctx, cp1)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "cp-1" || cfg.Cores != 2 || cfg.Sockets != 2 || cfg.Memory != 8192 || cfg.Tags != "k8s;talos" || cfg.Digest == "" {
		t.Fatalf("VMConfig = %+v", cfg)
	}
	uuid, sku := pve.ParseSMBIOS1(cfg.SMBIOS1)
	if uuid != uuidCP1 || sku != "c4.large" {
		t.Fatalf("ParseSMBIOS1(%q) = %q, %q", cfg.SMBIOS1, uuid, sku)
	}
	if len(cfg.Nets) != 2 {
		t.Fatalf("Nets = %v", cfg.Nets)
	}
	n0, err := pve.ParseNet(cfg.Nets[0])
	if err != nil || n0 != (pve.NetConfig{Model: "virtio", MAC: strings.ToLower(macCP1), Bridge: "vmbr0", Firewall: true}) {
		t.Fatalf("ParseNet(net0) = %+v, %v", n0, err)
	}
	n1, err := pve.ParseNet(cfg.Nets[1])
	if err != nil || n1.Tag != 20 || n1.Firewall {
		t.Fatalf("ParseNet(net1) = %+v, %v", n1, err)
	}

	st, err := c.VMStatus(ctx, cp1)
	if err != nil || st.Status != "running" || st.QMPStatus != "running" || st.Name != "cp-1" || st.Uptime <= 0 {
		t.Fatalf("VMStatus = %+v, %v", st, err)
	}
	ts.SetVMStatus(101, "stopped")
	if st, err := c.VMStatus(ctx, cp1); err != nil || st.Status != "stopped" {
		t.Fatalf("VMStatus after stop = %+v, %v", st, err)
	}
	if _, err := c.AgentInterfaces(ctx, cp1); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("AgentInterfaces of a stopped VM: %v", err)
	}
	ts.SetVMStatus(101, "running")

	ifs, err := c.AgentInterfaces(ctx, cp1)
	if err != nil {
		t.Fatal(err)
	}
	wantIfs := []pve.AgentInterface{
		{Name: "lo", MAC: "00:00:00:00:00:00", Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
		{Name: "eth0", MAC: strings.ToLower(macCP1), Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/24"), netip.MustParsePrefix("2001:db8::11/64")}},
	}
	if !reflect.DeepEqual(ifs, wantIfs) {
		t.Fatalf("AgentInterfaces =\n%+v\nwant\n%+v", ifs, wantIfs)
	}
	if _, err := c.AgentInterfaces(ctx, pve.VMRef{Node: "pve2", VMID: 102}); err == nil {
		t.Fatal("want an error for a VM without a running agent")
	}

	fo, err := c.VMFirewallOptions(ctx, cp1)
	if err != nil || fo.Enable || fo.IPFilter || fo.Digest == "" {
		t.Fatalf("VMFirewallOptions (defaults) = %+v, %v", fo, err)
	}
	ts.SetFirewallOptions(101, true, true)
	fo2, err := c.VMFirewallOptions(ctx, cp1)
	if err != nil || !fo2.Enable || !fo2.IPFilter || fo2.Digest == fo.Digest {
		t.Fatalf("VMFirewallOptions = %+v, %v", fo2, err)
	}

	// A VM asked for on the wrong host, and a VM that is gone.
	_, err = c.VMConfig(ctx, pve.VMRef{Node: "pve2", VMID: 101})
	if !pve.IsNotFound(err) {
		t.Fatalf("VMConfig on the wrong node: %v; want IsNotFound", err)
	}
	ts.DeleteVM(102)
	if _, err := c.VMStatus(ctx, pve.VMRef{Node: "pve2", VMID: 102}); !pve.IsNotFound(err) {
		t.Fatalf("VMStatus of a deleted VM: %v; want IsNotFound", err)
	}
}

func TestSimIPSetLifecycle(t *testing.T) {
	for _, scope := range []pve.Scope{pve.ClusterScope, pve.VMScope(cp1)} {
		name := "cluster"
		if scope.VM != nil {
			name = "vm"
		}
		t.Run(name, func(t *testing.T) {
			ts, c := newSim(t, pvesim.Options{}, nil)
			ctx := context.Background()

			if _, err := c.IPSetEntries(ctx, scope, "pvelb-vips"); !pve.IsNotFound(err) {
				t.Fatalf("entries of a missing set: %v; want IsNotFound", err)
			}
			if err := c.CreateIPSet(ctx, scope, "pvelb-vips", "managed by pvelb"); err != nil {
				t.Fatal(err)
			}
			if err := c.CreateIPSet(ctx, scope, "pvelb-vips", ""); !pve.IsAlreadyExists(err) {
				t.Fatalf("second create: %v; want IsAlreadyExists", err)
			}
			sets, err := c.IPSets(ctx, scope)
			if err != nil || len(sets) != 1 || sets[0].Name != "pvelb-vips" || sets[0].Comment != "managed by pvelb" || sets[0].Digest == "" {
				t.Fatalf("IPSets = %+v, %v", sets, err)
			}

			adds := []pve.IPSetEntry{
				{CIDR: "192.0.2.10/32", Comment: "pvelb: default/web"},
				{CIDR: "198.51.100.77/24", NoMatch: true},
				{CIDR: "2001:db8:0:0::20/128", Comment: "pvelb: default/web6"},
				{CIDR: "2001:db8:1::5/48"},
			}
			for _, e := range adds {
				if err := c.AddIPSetEntry(ctx, scope, "pvelb-vips", e); err != nil {
					t.Fatalf("add %s: %v", e.CIDR, err)
				}
			}
			// The normalised form is what is stored, so the duplicate check
			// catches a differently written duplicate.
			if err := c.AddIPSetEntry(ctx, scope, "pvelb-vips", pve.IPSetEntry{CIDR: "192.0.2.10"}); !pve.IsAlreadyExists(err) {
				t.Fatalf("duplicate add: %v; want IsAlreadyExists", err)
			}
			entries, err := c.IPSetEntries(ctx, scope, "pvelb-vips")
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]pve.IPSetEntry{}
			for _, e := range entries {
				if e.Digest == "" || e.Digest != entries[0].Digest {
					t.Fatalf("entry digests %+v", entries)
				}
				e.Digest = ""
				got[e.CIDR] = e
			}
			wantEntries := map[string]pve.IPSetEntry{
				"192.0.2.10":      {CIDR: "192.0.2.10", Comment: "pvelb: default/web"},
				"198.51.100.0/24": {CIDR: "198.51.100.0/24", NoMatch: true},
				"2001:db8::20":    {CIDR: "2001:db8::20", Comment: "pvelb: default/web6"},
				"2001:db8:1::/48": {CIDR: "2001:db8:1::/48"},
			}
			if !reflect.DeepEqual(got, wantEntries) {
				t.Fatalf("entries =\n%+v\nwant\n%+v", got, wantEntries)
			}
			if direct := ts.IPSetEntries(scope, "pvelb-vips"); len(direct) != 4 {
				t.Fatalf("simulator holds %+v", direct)
			}

			// Deletes, written the way a caller might, all hit.
			for _, cidr := range []string{"192.0.2.10/32", "198.51.100.5/24", "2001:db8::20/128", "2001:db8:1::/48"} {
				if err := c.DeleteIPSetEntry(ctx, scope, "pvelb-vips", cidr, entries[0].Digest); err != nil {
					if pve.IsConflict(err) {
						// Each delete changes the digest; re-read it.
						cur, rerr := c.IPSetEntries(ctx, scope, "pvelb-vips")
						if rerr != nil || len(cur) == 0 {
							t.Fatalf("re-read: %v", rerr)
						}
						entries = cur
						err = c.DeleteIPSetEntry(ctx, scope, "pvelb-vips", cidr, cur[0].Digest)
					}
					if err != nil {
						t.Fatalf("delete %s: %v", cidr, err)
					}
				}
			}
			if left := ts.IPSetEntries(scope, "pvelb-vips"); len(left) != 0 {
				t.Fatalf("entries left after deletes: %+v", left)
			}
			if err := c.DeleteIPSetEntry(ctx, scope, "nope", "192.0.2.1", ""); !pve.IsNotFound(err) {
				t.Fatalf("delete in a missing set: %v; want IsNotFound", err)
			}
		})
	}
}

// TestSimNormalisationAvoidsSilentDeleteMiss shows the Proxmox trap (a delete
// of "x/32" succeeds and removes nothing) with a raw request, then that the
// client's delete of the same input removes the entry.
func TestSimNormalisationAvoidsSilentDeleteMiss(t *testing.T) {
	ts, c := newSim(t, pvesim.Options{}, nil)
	ctx := context.Background()
	ts.SeedIPSet(pve.ClusterScope, "pvelb-vips", pve.IPSetEntry{CIDR: "192.0.2.5"}, pve.IPSetEntry{CIDR: "203.0.113.9", Comment: "user's own"})

	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, ts.URL+"/cluster/firewall/ipset/pvelb-vips/192.0.2.5%2F32", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", ts.AuthHeader())
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("raw delete: %s", res.Status)
	}
	if n := len(ts.IPSetEntries(pve.ClusterScope, "pvelb-vips")); n != 2 {
		t.Fatalf("the simulator should model the silent miss; %d entries left", n)
	}

	if err := c.DeleteIPSetEntry(ctx, pve.ClusterScope, "pvelb-vips", "192.0.2.5/32", ""); err != nil {
		t.Fatal(err)
	}
	left := ts.IPSetEntries(pve.ClusterScope, "pvelb-vips")
	if len(left) != 1 || left[0].CIDR != "203.0.113.9" {
		t.Fatalf("after the client's delete: %+v; want only the user's entry", left)
	}
}

func TestSimDigestConflict(t *testing.T) {
	ts, c := newSim(t, pvesim.Options{}, nil)
	ctx := context.Background()
	scope := pve.VMScope(cp1)
	ts.SeedIPSet(scope, "ipfilter-net0", pve.IPSetEntry{CIDR: "192.0.2.11"}, pve.IPSetEntry{CIDR: "192.0.2.50"})
	entries, err := c.IPSetEntries(ctx, scope, "ipfilter-net0")
	if err != nil {
		t.Fatal(err)
	}
	stale := entries[0].Digest
	// Someone else changes the set.
	if err := c.AddIPSetEntry(ctx, scope, "ipfilter-net0", pve.IPSetEntry{CIDR: "192.0.2.51"}); err != nil {
		t.Fatal(err)
	}
	ts.ResetStats()
	err = c.DeleteIPSetEntry(ctx, scope, "ipfilter-net0", "192.0.2.50", stale)
	if !pve.IsConflict(err) {
		t.Fatalf("delete with a stale digest: %v; want IsConflict", err)
	}
	if pve.IsTransient(err) {
		t.Fatalf("a conflict must not be retried blindly: %v", err)
	}
	if n := ts.Stats().Requests; n != 1 {
		t.Fatalf("conflict was sent %d times; want 1 (no retry)", n)
	}
	if n := len(ts.IPSetEntries(scope, "ipfilter-net0")); n != 3 {
		t.Fatalf("%d entries; the conflicting delete must remove nothing", n)
	}
}

func TestSimInjectedLockTimeoutIsRetried(t *testing.T) {
	ts, c := newSim(t, pvesim.Options{}, func(o *pve.Options) { o.MaxRetries = 3 })
	ctx := context.Background()
	if err := c.CreateIPSet(ctx, pve.ClusterScope, "pvelb-vips", ""); err != nil {
		t.Fatal(err)
	}
	ts.InjectFault(pvesim.Fault{Method: http.MethodPost, PathPrefix: "/cluster/firewall/ipset/pvelb-vips", Status: 500,
		Reason: "cfs-lock 'firewall-cluster' error: got lock request timeout", Count: 2})
	ts.ResetStats()
	if err := c.AddIPSetEntry(ctx, pve.ClusterScope, "pvelb-vips", pve.IPSetEntry{CIDR: "192.0.2.20"}); err != nil {
		t.Fatalf("add through two lock timeouts: %v", err)
	}
	if n := ts.Stats().Requests; n != 3 {
		t.Fatalf("requests = %d; want 3 (two timeouts, one success)", n)
	}
	if e := ts.IPSetEntries(pve.ClusterScope, "pvelb-vips"); len(e) != 1 || e[0].CIDR != "192.0.2.20" {
		t.Fatalf("entries = %+v", e)
	}

	// More timeouts than retries: the caller gets the transient error.
	ts.InjectFault(pvesim.Fault{Method: http.MethodPost, PathPrefix: "/cluster/firewall/ipset/pvelb-vips", Status: 500,
		Reason: "cfs-lock 'firewall-cluster' error: got lock request timeout", Count: 10})
	ts.ResetStats()
	err := c.AddIPSetEntry(ctx, pve.ClusterScope, "pvelb-vips", pve.IPSetEntry{CIDR: "192.0.2.21"})
	if !pve.IsTransient(err) || !strings.Contains(err.Error(), "lock request timeout") {
		t.Fatalf("err = %v; want the lock timeout", err)
	}
	if n := ts.Stats().Requests; n != 4 {
		t.Fatalf("requests = %d; want 1 + 3 retries", n)
	}
}

// TestSimRealLockContention makes two writers contend for the same VM's
// firewall lock for real: the slow first write outlasts the lock timeout of
// the second, which is retried and then succeeds.
func TestSimRealLockContention(t *testing.T) {
	ts, c := newSim(t, pvesim.Options{WriteLatency: 300 * time.Millisecond, LockTimeout: 50 * time.Millisecond},
		func(o *pve.Options) { o.MaxRetries = 5; o.RetryBackoff = 100 * time.Millisecond })
	scope := pve.VMScope(cp1)
	ts.SeedIPSet(scope, "ipfilter-net0", pve.IPSetEntry{CIDR: "192.0.2.11"})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, cidr := range []string{"192.0.2.30", "192.0.2.31"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.AddIPSetEntry(ctx, scope, "ipfilter-net0", pve.IPSetEntry{CIDR: cidr})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if n := len(ts.IPSetEntries(scope, "ipfilter-net0")); n != 3 {
		t.Fatalf("%d entries; want 3", n)
	}
	if n := ts.Stats().Writes; n < 3 {
		t.Fatalf("writes = %d; the contended writer should have been retried", n)
	}
}

func TestSimOutageIsTransient(t *testing.T) {
	ts, c := newSim(t, pvesim.Options{}, func(o *pve.Options) { o.MaxRetries = 2 })
	ctx := context.Background()
	ts.SetOutage(true)
	ts.ResetStats()
	_, err := c.ClusterVMs(ctx)
	if !pve.IsTransient(err) {
		t.Fatalf("err = %v; want transient", err)
	}
	var pe *pve.Error
	if !errors.As(err, &pe) || pe.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("err = %#v", err)
	}
	if n := ts.Stats().Requests; n != 3 {
		t.Fatalf("requests = %d; want 1 + 2 retries", n)
	}
	ts.SetOutage(false)
	if _, err := c.ClusterVMs(ctx); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

func TestSimOfflineHost(t *testing.T) {
	ts, c := newSim(t, pvesim.Options{}, func(o *pve.Options) { o.MaxRetries = 1 })
	ctx := context.Background()
	ts.SetHostOnline("pve1", false)
	vms, err := c.ClusterVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if vms[0].VMID != 101 || vms[0].Status != "unknown" {
		t.Fatalf("VM on an offline host: %+v", vms[0])
	}
	_, err = c.VMConfig(ctx, cp1)
	var pe *pve.Error
	if !pve.IsTransient(err) || !errors.As(err, &pe) || pe.StatusCode != 595 {
		t.Fatalf("VMConfig on an offline host: %v; want a transient 595", err)
	}
	if pve.IsNotFound(err) {
		t.Fatalf("an unreachable host must not look like a deleted VM: %v", err)
	}
}

func TestSimAuth(t *testing.T) {
	ts := pvesim.NewTestServer(t, pvesim.Options{Tokens: []pvesim.Token{
		{ID: "pvelb@pve!ccm", Secret: "1b9a1c5e-0000-4000-8000-00000000c0de", Privileges: []string{"VM.Audit", "Sys.Audit"}},
	}})
	mustAddVM(t, ts, pvesim.VM{VMID: 101, Node: "pve1"})
	ctx := context.Background()

	c := newClient(t, ts, ts.TokenSecret, func(o *pve.Options) { o.MaxRetries = 3 })
	if _, err := c.ClusterVMs(ctx); err != nil {
		t.Fatalf("read with VM.Audit: %v", err)
	}
	if _, err := c.IPSets(ctx, pve.VMScope(cp1)); err != nil {
		t.Fatalf("VM ipset read with VM.Audit: %v", err)
	}
	ts.ResetStats()
	err := c.CreateIPSet(ctx, pve.VMScope(cp1), "ipfilter-net0", "")
	var pe *pve.Error
	if !pve.IsAuth(err) || !errors.As(err, &pe) || pe.StatusCode != http.StatusForbidden {
		t.Fatalf("write without VM.Config.Network: %v; want a 403 IsAuth", err)
	}
	if n := ts.Stats().Requests; n != 1 {
		t.Fatalf("403 sent %d times; want no retry", n)
	}
	if err := c.CreateIPSet(ctx, pve.ClusterScope, "pvelb-vips", ""); !pve.IsAuth(err) {
		t.Fatalf("cluster write without Sys.Modify: %v; want IsAuth", err)
	}

	const wrong = "1b9a1c5e-0000-4000-8000-0000000bad00"
	bad := newClient(t, ts, wrong, nil)
	ts.ResetStats()
	_, err = bad.ClusterVMs(ctx)
	if !pve.IsAuth(err) || !errors.As(err, &pe) || pe.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %v; want a 401 IsAuth", err)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), ts.TokenSecret) {
		t.Fatalf("error leaks a secret: %v", err)
	}
	if n := ts.Stats().Requests; n != 1 {
		t.Fatalf("401 sent %d times; want no retry", n)
	}
}

func TestSimTLSNeedsCA(t *testing.T) {
	ts, _ := newSim(t, pvesim.Options{}, nil)
	c := newClient(t, ts, ts.TokenSecret, func(o *pve.Options) { o.CAFile = ""; o.MaxRetries = 3 })
	ts.ResetStats()
	_, err := c.ClusterVMs(context.Background())
	var ne *pve.NetworkError
	if !errors.As(err, &ne) || pve.IsTransient(err) {
		t.Fatalf("without the simulator's CA: %v; want a non-transient NetworkError", err)
	}
	if n := ts.Stats().Requests; n != 0 {
		t.Fatalf("%d requests reached the server over an untrusted connection", n)
	}
}

func TestSimMetricsUseTemplates(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := pve.NewMetrics(reg)
	ts, c := newSim(t, pvesim.Options{}, func(o *pve.Options) { o.Metrics = m })
	ctx := context.Background()
	for _, vm := range []pve.VMRef{cp1, {Node: "pve2", VMID: 102}} {
		ts.SeedIPSet(pve.VMScope(vm), "ipfilter-net0", pve.IPSetEntry{CIDR: "192.0.2.99"})
		for _, cidr := range []string{"192.0.2.1", "192.0.2.2/32", "198.51.100.0/24"} {
			if err := c.AddIPSetEntry(ctx, pve.VMScope(vm), "ipfilter-net0", pve.IPSetEntry{CIDR: cidr}); err != nil {
				t.Fatal(err)
			}
			if err := c.DeleteIPSetEntry(ctx, pve.VMScope(vm), "ipfilter-net0", cidr, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	const want = `
# HELP pvelb_proxmox_requests_total Proxmox API requests by endpoint template, method and HTTP status code ("error" when no response arrived).
# TYPE pvelb_proxmox_requests_total counter
pvelb_proxmox_requests_total{code="200",endpoint="/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}",method="POST",region="sim"} 6
pvelb_proxmox_requests_total{code="200",endpoint="/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}",method="DELETE",region="sim"} 6
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pvelb_proxmox_requests_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "pvelb_proxmox_request_duration_seconds"); n != 2 {
		t.Fatalf("duration series = %d; want 2", n)
	}
}
