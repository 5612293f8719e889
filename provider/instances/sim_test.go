package instances_test

// Integration tests: the real Proxmox client (pve.New) against the Proxmox
// simulator (test/pvesim), which checks every request against the real API
// schema and privileges.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cloudprovider "k8s.io/cloud-provider"
	cloudproviderapi "k8s.io/cloud-provider/api"

	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/instances"
	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

const (
	uuidW1 = "3f0e7a52-9b1c-4d2e-8f3a-5b6c7d8e9f01"
	uuidW2 = "4a1f8b63-0c2d-4e3f-9a4b-6c7d8e9f0a12"
	uuidW3 = "5b2a9c74-1d3e-4f4a-8b5c-7d8e9f0a1b23"
)

func simClient(t *testing.T, srv *pvesim.TestServer, region, tokenID, secret string) pve.Client {
	t.Helper()
	c, err := pve.New(pve.Options{
		Region: region, URL: srv.URL, TokenID: tokenID, TokenSecret: secret, CAFile: srv.CAFile,
		Timeout: 5 * time.Second, MaxRetries: 1, RetryBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("pve.New: %v", err)
	}
	return c
}

type simLab struct {
	east, west *pvesim.TestServer
	inst       *instances.Instances
}

// newSimLab: region pve-east (hosts pve1, pve2) with w1 (101) and w2 (102),
// region pve-west (host pve9) with w3 (201) and a template (9000).
func newSimLab(t *testing.T, mode config.AddressMode, ttl time.Duration) *simLab {
	t.Helper()
	east := pvesim.NewTestServer(t, pvesim.Options{})
	west := pvesim.NewTestServer(t, pvesim.Options{})
	for _, vm := range []pvesim.VM{
		{VMID: 101, Node: "pve1", Name: "w1", UUID: strings.ToUpper(uuidW1), SKU: "gp.large", Cores: 2, Sockets: 2, MemoryMiB: 8192,
			Agent: []pvesim.AgentIface{
				{Name: "lo", Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
				{Name: "eth0", MAC: "bc:24:11:00:00:01", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/24"), netip.MustParsePrefix("fe80::be24:11ff:fe00:1/64")}},
				{Name: "eth1", MAC: "bc:24:11:00:00:02", Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.11/24")}},
				{Name: "cilium_host", Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.0.1/32")}},
			}},
		{VMID: 102, Node: "pve2", Name: "w2", UUID: uuidW2, Cores: 2, MemoryMiB: 1536},
	} {
		if err := east.AddVM(vm); err != nil {
			t.Fatal(err)
		}
	}
	for _, vm := range []pvesim.VM{
		{VMID: 201, Node: "pve9", Name: "w3", UUID: uuidW3, Cores: 4, MemoryMiB: 4096},
		{VMID: 9000, Node: "pve9", Name: "tmpl", UUID: uuidW3, Template: true, Status: "stopped"},
	} {
		if err := west.AddVM(vm); err != nil {
			t.Fatal(err)
		}
	}
	inst, err := instances.New(instances.Options{
		Regions: []instances.Region{
			{Name: "pve-east", Client: simClient(t, east, "pve-east", east.TokenID, east.TokenSecret)},
			{Name: "pve-west", Client: simClient(t, west, "pve-west", west.TokenID, west.TokenSecret)},
		},
		Addresses: mode, CacheTTL: ttl,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &simLab{east: east, west: west, inst: inst}
}

func node(name, providerID, uuid, provided string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}}
	n.Spec.ProviderID = providerID
	n.Status.NodeInfo.SystemUUID = uuid
	if provided != "" {
		n.Annotations[cloudproviderapi.AnnotationAlphaProvidedIPAddr] = provided
	}
	return n
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestSimInstanceMetadata(t *testing.T) {
	lab := newSimLab(t, config.AddressesProvidedAndAgent, 15*time.Second)
	md, err := lab.inst.InstanceMetadata(ctx(t), node("w1", "", uuidW1, "192.0.2.11"))
	if err != nil {
		t.Fatalf("InstanceMetadata(w1): %v", err)
	}
	if md.ProviderID != "proxmox://pve-east/101" || md.InstanceType != "gp.large" || md.Region != "pve-east" || md.Zone != "pve1" {
		t.Errorf("w1 metadata = %+v", md)
	}
	if md.AdditionalLabels[names.LabelProxmoxHost] != "pve1" || md.AdditionalLabels[names.LabelProxmoxVMID] != "101" {
		t.Errorf("w1 labels = %v", md.AdditionalLabels)
	}
	var got []string
	for _, a := range md.NodeAddresses {
		got = append(got, string(a.Type)+"="+a.Address)
	}
	want := []string{"InternalIP=192.0.2.11", "InternalIP=198.51.100.11", "Hostname=w1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("w1 addresses = %v, want %v", got, want)
	}

	// No SKU: computed type; 1536 MiB -> 1.5GB.
	md, err = lab.inst.InstanceMetadata(ctx(t), node("w2", "proxmox://pve-east/102", "", "192.0.2.12"))
	if err != nil {
		t.Fatalf("InstanceMetadata(w2): %v", err)
	}
	if md.InstanceType != "2VCPU-1.5GB" || md.Zone != "pve2" {
		t.Errorf("w2 metadata = %+v", md)
	}

	// Second region; the template sharing w3's UUID is not a candidate.
	md, err = lab.inst.InstanceMetadata(ctx(t), node("w3", "", uuidW3, "2001:db8::13"))
	if err != nil {
		t.Fatalf("InstanceMetadata(w3): %v", err)
	}
	if md.ProviderID != "proxmox://pve-west/201" || md.InstanceType != "4VCPU-4GB" || md.Region != "pve-west" {
		t.Errorf("w3 metadata = %+v", md)
	}

	// A Node no VM claims: not found, and never matched by its name.
	_, err = lab.inst.InstanceMetadata(ctx(t), node("w1", "", "99999999-0000-4000-8000-000000000000", "192.0.2.11"))
	if !errors.Is(err, cloudprovider.InstanceNotFound) {
		t.Errorf("unknown UUID: err = %v, want InstanceNotFound", err)
	}

	// w2 has no guest agent: the provided IP alone, no failure.
	md, err = lab.inst.InstanceMetadata(ctx(t), node("w2", "", uuidW2, "192.0.2.12"))
	if err != nil || len(md.NodeAddresses) != 2 || md.NodeAddresses[0].Address != "192.0.2.12" {
		t.Errorf("w2 without agent = %+v, %v", md, err)
	}
}

func TestSimDuplicateUUIDIsAnError(t *testing.T) {
	lab := newSimLab(t, config.AddressesProvided, 0)
	if err := lab.west.AddVM(pvesim.VM{VMID: 250, Node: "pve9", Name: "restored-w1", UUID: uuidW1}); err != nil {
		t.Fatal(err)
	}
	_, err := lab.inst.InstanceMetadata(ctx(t), node("w1", "", uuidW1, "192.0.2.11"))
	if err == nil || !strings.Contains(err.Error(), "is used by 2 VMs") {
		t.Fatalf("err = %v, want a duplicate-UUID error", err)
	}
}

func TestSimLifecycle(t *testing.T) {
	lab := newSimLab(t, config.AddressesProvided, 0)
	w1 := node("w1", "proxmox://pve-east/101", uuidW1, "192.0.2.11")

	check := func(step string, wantExists, wantShutdown, wantErr bool) {
		t.Helper()
		exists, err := lab.inst.InstanceExists(ctx(t), w1)
		if (err != nil) != wantErr {
			t.Fatalf("%s: InstanceExists err = %v, wantErr %v", step, err, wantErr)
		}
		if err == nil && exists != wantExists {
			t.Errorf("%s: InstanceExists = %v, want %v", step, exists, wantExists)
		}
		if !exists && err != nil {
			t.Errorf("%s: (false, error): never report gone while unsure", step)
		}
		if err != nil {
			return
		}
		shutdown, err := lab.inst.InstanceShutdown(ctx(t), w1)
		if err != nil || shutdown != wantShutdown {
			t.Errorf("%s: InstanceShutdown = %v, %v; want %v", step, shutdown, err, wantShutdown)
		}
	}

	check("running", true, false, false)
	lab.east.SetVMStatus(101, "stopped")
	check("stopped", true, true, false)
	lab.east.SetVMStatus(101, "running")
	lab.east.SetHostOnline("pve1", false)
	check("host unreachable", true, false, false)
	lab.east.SetHostOnline("pve1", true)
	lab.east.SetOutage(true)
	check("API outage", true, false, true)
	lab.east.SetOutage(false)
	lab.east.InjectFault(pvesim.Fault{Method: "GET", PathPrefix: "/cluster/resources", Status: 401, Reason: "authentication failure"})
	check("auth failure", true, false, true)
	lab.east.ClearFaults()
	check("recovered", true, false, false)

	// Moved to another host: still exists, zone follows.
	lab.east.MoveVM(101, "pve2")
	md, err := lab.inst.InstanceMetadata(ctx(t), w1)
	if err != nil || md.Zone != "pve2" {
		t.Errorf("after migration: %+v, %v", md, err)
	}

	lab.east.DeleteVM(101)
	check("deleted", false, false, false)

	// Another provider's Node and an unknown region are never "gone".
	for _, id := range []string{"aws:///us-east-1a/i-0abc", "proxmox://pve-north/101"} {
		exists, err := lab.inst.InstanceExists(ctx(t), node("x", id, "", ""))
		if !exists {
			t.Errorf("InstanceExists(%s) = false, %v", id, err)
		}
	}
}

// A token without VM.Audit sees an empty VM list; that must not look like
// every VM having been deleted.
func TestSimTokenWithoutVMAuditDeletesNothing(t *testing.T) {
	srv := pvesim.NewTestServer(t, pvesim.Options{Tokens: []pvesim.Token{
		{ID: "pvelb@pve!ccm", Secret: "11111111-2222-3333-4444-555555555555", Privileges: []string{"Sys.Audit"}},
	}})
	if err := srv.AddVM(pvesim.VM{VMID: 101, Node: "pve1", Name: "w1", UUID: uuidW1}); err != nil {
		t.Fatal(err)
	}
	inst, err := instances.New(instances.Options{Regions: []instances.Region{
		{Name: "pve-east", Client: simClient(t, srv, "pve-east", srv.TokenID, srv.TokenSecret)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	labelled := node("w1", "proxmox://pve-east/101", "", "")
	labelled.Labels = map[string]string{names.LabelProxmoxHost: "pve1"}
	for _, c := range []struct {
		n    *v1.Node
		want string
	}{
		{node("w1", "proxmox://pve-east/101", "", ""), "lists no VMs at all"},
		{labelled, "Permission check failed (/vms/101"},
	} {
		exists, err := inst.InstanceExists(ctx(t), c.n)
		if err == nil || !exists || !strings.Contains(err.Error(), c.want) {
			t.Errorf("InstanceExists with labels %v = %v, %v; want (true, error containing %q)", c.n.Labels, exists, err, c.want)
		}
	}
	// Node init fails clearly instead of binding to nothing.
	if _, err := inst.InstanceMetadata(ctx(t), node("w1", "", uuidW1, "192.0.2.11")); err == nil {
		t.Error("InstanceMetadata succeeded without VM.Audit")
	}
}

// A resync over many Nodes reads the VM list once per region and each VM's
// config once per cache period.
func TestSimResyncUsesCache(t *testing.T) {
	srv := pvesim.NewTestServer(t, pvesim.Options{})
	const n = 30
	var nodes []*v1.Node
	for k := range n {
		vmid := 300 + k
		uuid := fmt.Sprintf("00000000-0000-4000-8000-%012d", vmid)
		if err := srv.AddVM(pvesim.VM{VMID: vmid, Node: fmt.Sprintf("pve%d", k%3+1), Name: fmt.Sprintf("n%d", k), UUID: uuid}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, node(fmt.Sprintf("n%d", k), "", uuid, fmt.Sprintf("192.0.2.%d", 10+k)))
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	inst, err := instances.New(instances.Options{
		Regions:  []instances.Region{{Name: "lab", Client: simClient(t, srv, "lab", srv.TokenID, srv.TokenSecret)}},
		CacheTTL: time.Minute, Clock: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.ResetStats()
	for round := range 2 {
		for _, nd := range nodes {
			md, err := inst.InstanceMetadata(ctx(t), nd)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if want := fmt.Sprintf("proxmox://lab/%d", 300+mustIndex(nodes, nd)); md.ProviderID != want {
				t.Fatalf("%s: ProviderID %s, want %s", nd.Name, md.ProviderID, want)
			}
		}
	}
	st := srv.Stats()
	if got := st.ByPath["GET /cluster/resources"]; got != 1 {
		t.Errorf("VM list requests = %d, want 1", got)
	}
	if got := st.ByPath["GET /nodes/{node}/qemu/{vmid}/config"]; got != n {
		t.Errorf("config requests = %d, want %d (one per VM)", got, n)
	}
}

func mustIndex(nodes []*v1.Node, n *v1.Node) int {
	for k := range nodes {
		if nodes[k] == n {
			return k
		}
	}
	return -1
}

// TestSimEndpointOutageIsNotVMGone: a region reached through two Proxmox
// hosts' APIs. With one stopped, Nodes are still initialised and exist; with
// both stopped, InstanceExists and InstanceShutdown answer errors (the node
// lifecycle controller retries), never "gone" or "shut down".
func TestSimEndpointOutageIsNotVMGone(t *testing.T) {
	sim := pvesim.NewTestServer(t, pvesim.Options{})
	if err := sim.AddVM(pvesim.VM{VMID: 101, Node: "pve1", Name: "w1", UUID: uuidW1, Cores: 2, MemoryMiB: 2048}); err != nil {
		t.Fatal(err)
	}
	a, b := sim.AddEndpoint(t), sim.AddEndpoint(t)
	c, err := pve.New(pve.Options{
		Region: "pve-east", URLs: []string{a.URL, b.URL}, TokenID: sim.TokenID, TokenSecret: sim.TokenSecret,
		CAFile: sim.CAFile, Timeout: 2 * time.Second, MaxRetries: 1, RetryBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// No cache: every question goes to Proxmox.
	inst, err := instances.New(instances.Options{Regions: []instances.Region{{Name: "pve-east", Client: c}}})
	if err != nil {
		t.Fatal(err)
	}
	w1 := node("w1", "", uuidW1, "192.0.2.11")

	a.Stop()
	md, err := inst.InstanceMetadata(ctx(t), w1)
	if err != nil || md.ProviderID != "proxmox://pve-east/101" || md.Zone != "pve1" {
		t.Fatalf("first endpoint stopped: metadata %+v, %v; want the VM through the second", md, err)
	}
	w1.Spec.ProviderID = md.ProviderID
	if ok, err := inst.InstanceExists(ctx(t), w1); !ok || err != nil {
		t.Fatalf("first endpoint stopped: InstanceExists = %v, %v; want true", ok, err)
	}

	b.Stop()
	ok, err := inst.InstanceExists(ctx(t), w1)
	if !ok || err == nil {
		t.Fatalf("every endpoint stopped: InstanceExists = %v, %v; want true and an error", ok, err)
	}
	var ne *pve.NetworkError
	if !errors.As(err, &ne) {
		t.Fatalf("every endpoint stopped: %T %v; want a NetworkError inside", err, err)
	}
	if down, err := inst.InstanceShutdown(ctx(t), w1); down || err == nil {
		t.Fatalf("every endpoint stopped: InstanceShutdown = %v, %v; want false and an error", down, err)
	}
}

// TestSimCAPMOXProviderID: a Node that Cluster API Proxmox created carries
// proxmox://<smbios uuid>. It is matched to the VM with that uuid (whatever
// its systemUUID says), keeps its providerID, gets zone and labels, is shut
// down with its VM, and is never reported gone (Cluster API deletes its own
// Nodes; a uuid miss cannot be told from a VM the token may not see).
func TestSimCAPMOXProviderID(t *testing.T) {
	lab := newSimLab(t, config.AddressesProvided, 0)
	id := "proxmox://" + strings.ToUpper(uuidW2)
	n := node("capi-w2", id, "", "192.0.2.12")

	md, err := lab.inst.InstanceMetadata(ctx(t), n)
	if err != nil {
		t.Fatalf("InstanceMetadata: %v", err)
	}
	if md.ProviderID != id || md.Region != "pve-east" || md.Zone != "pve2" ||
		md.AdditionalLabels[names.LabelProxmoxVMID] != "102" || md.AdditionalLabels[names.LabelProxmoxHost] != "pve2" {
		t.Fatalf("metadata = %+v; want VM 102 on pve2 and the Node's own providerID", md)
	}
	if ok, err := lab.inst.InstanceExists(ctx(t), n); !ok || err != nil {
		t.Fatalf("InstanceExists = %v, %v", ok, err)
	}
	if down, err := lab.inst.InstanceShutdown(ctx(t), n); down || err != nil {
		t.Fatalf("running VM: InstanceShutdown = %v, %v", down, err)
	}
	lab.east.SetVMStatus(102, "stopped")
	if down, err := lab.inst.InstanceShutdown(ctx(t), n); !down || err != nil {
		t.Fatalf("stopped VM: InstanceShutdown = %v, %v; want true", down, err)
	}

	// The uuid in the second region.
	w3 := node("capi-w3", "proxmox://"+uuidW3, "", "")
	if vm, err := lab.inst.VMForNode(ctx(t), w3); err != nil || vm.Region != "pve-west" || vm.Resource.VMID != 201 {
		t.Fatalf("VMForNode(w3) = %+v, %v; want pve-west/201 (not the template)", vm, err)
	}

	lab.east.DeleteVM(102)
	if ok, err := lab.inst.InstanceExists(ctx(t), n); !ok || err != nil {
		t.Fatalf("deleted VM: InstanceExists = %v, %v; want true (never deleted by pvelb)", ok, err)
	}
	if _, err := lab.inst.VMForNode(ctx(t), n); !errors.Is(err, cloudprovider.InstanceNotFound) {
		t.Fatalf("deleted VM: VMForNode err = %v; want InstanceNotFound", err)
	}
}
