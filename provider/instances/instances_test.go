package instances

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cloudprovider "k8s.io/cloud-provider"
	cloudproviderapi "k8s.io/cloud-provider/api"

	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/pve"
)

const (
	uuidA = "6f1b3c2a-0d4e-4f5a-8b9c-1d2e3f4a5b6c"
	uuidB = "7a2c4d3b-1e5f-4a6b-9c0d-2e3f4a5b6c7d"
	uuidC = "8b3d5e4c-2f6a-4b7c-8d1e-3f4a5b6c7d8e"
)

// twoRegions: east has VMs 101 (w1, uuidA, on pve1) and 102 (w2, uuidB, on
// pve2); west has 201 (w3, uuidC, on pve9).
func twoRegions(t *testing.T, mode config.AddressMode) (*Instances, *fakeClient, *fakeClient, *fakeClock) {
	t.Helper()
	east := newFake().addVM(101, "pve1", "w1", uuidA).addVM(102, "pve2", "w2", uuidB)
	west := newFake().addVM(201, "pve9", "w3", uuidC)
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	inst, err := New(Options{
		Regions:   []Region{{Name: "pve-east", Client: east}, {Name: "pve-west", Client: west}},
		Addresses: mode, CacheTTL: 15 * time.Second, Clock: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return inst, east, west, clock
}

func mkNode(name, providerID, uuid, providedIP string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}}
	n.Spec.ProviderID = providerID
	n.Status.NodeInfo.SystemUUID = uuid
	if providedIP != "" {
		n.Annotations[cloudproviderapi.AnnotationAlphaProvidedIPAddr] = providedIP
	}
	return n
}

func labelled(n *v1.Node, host string) *v1.Node {
	n.Labels = map[string]string{names.LabelProxmoxHost: host}
	return n
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New with no regions succeeded")
	}
	if _, err := New(Options{Regions: []Region{{Name: "a", Client: newFake()}, {Name: "a", Client: newFake()}}}); err == nil {
		t.Error("New with duplicate regions succeeded")
	}
	if _, err := New(Options{Regions: []Region{{Name: "a"}}}); err == nil {
		t.Error("New with a nil client succeeded")
	}
}

func TestInstanceExists(t *testing.T) {
	tests := []struct {
		name       string
		node       *v1.Node
		setup      func(east, west *fakeClient)
		wantExists bool
		wantErr    string
	}{
		{name: "VM present", node: mkNode("w1", "proxmox://pve-east/101", "", ""), wantExists: true},
		{name: "VM in the second region", node: mkNode("w3", "proxmox://pve-west/201", "", ""), wantExists: true},
		{name: "VM deleted", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) { e.remove(101) }, wantExists: false},
		{name: "VM id now an LXC container", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) {
			e.remove(101)
			e.vms = append(e.vms, pve.VMResource{VMID: 101, Node: "pve1", Type: "lxc", Status: "running"})
		}, wantExists: false},
		{name: "host unreachable (status unknown)", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) { e.setStatus(101, "unknown") }, wantExists: true},
		{name: "VM stopped still exists", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) { e.setStatus(101, "stopped") }, wantExists: true},
		{name: "foreign providerID", node: mkNode("w1", "aws:///us-east-1a/i-0abc", "", ""), wantExists: true},
		{name: "no providerID", node: mkNode("w9", "", "00000000-0000-0000-0000-000000000000", ""), wantExists: true},
		{name: "unknown region", node: mkNode("w1", "proxmox://pve-north/101", "", ""), wantErr: `region "pve-north" is not in the cloud config`},
		{name: "malformed proxmox providerID", node: mkNode("w1", "proxmox://pve-east/x", "", ""), wantErr: "is not a Proxmox VM id"},
		{name: "auth failure", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) { e.listErr = errAuth }, wantErr: "401"},
		{name: "API outage", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) { e.listErr = errOutage }, wantErr: "503"},
		{name: "token lost VM.Audit: list empty, config 403", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) {
			e.vms = nil
			e.cfgErr[101] = errForbidden
		}, wantErr: "not treating the Node as gone"},
		{name: "empty list and nobody to ask", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) {
			e.vms = nil
			delete(e.configs, 101)
		}, wantErr: "lists no VMs at all"},
		{name: "empty list but labelled host says gone", node: labelled(mkNode("w1", "proxmox://pve-east/101", "", ""), "pve1"), setup: func(e, _ *fakeClient) {
			e.vms = nil
			delete(e.configs, 101)
		}, wantExists: false},
		{name: "hidden from list but config readable", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) {
			e.vms = e.vms[1:]
		}, wantErr: "its config exists on"},
		{name: "confirming host unreachable", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) {
			e.remove(101)
			e.cfgErr[101] = errNoHost
		}, wantErr: "confirming on host pve2 failed"},
		{name: "other region's outage does not matter", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(_, w *fakeClient) { w.listErr = errOutage }, wantExists: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, east, west, _ := twoRegions(t, config.AddressesProvided)
			if tt.setup != nil {
				tt.setup(east, west)
			}
			exists, err := inst.InstanceExists(context.Background(), tt.node)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("InstanceExists err = %v, want %q", err, tt.wantErr)
				}
				// The lifecycle controller deletes only on (false, nil); still,
				// never say "gone" when unsure.
				if !exists {
					t.Errorf("InstanceExists = false with error; want true")
				}
				return
			}
			if err != nil {
				t.Fatalf("InstanceExists: %v", err)
			}
			if exists != tt.wantExists {
				t.Errorf("InstanceExists = %v, want %v", exists, tt.wantExists)
			}
		})
	}
}

// A VM created after the list was cached must not be reported gone.
func TestInstanceExistsRereadsCachedMiss(t *testing.T) {
	inst, east, _, _ := twoRegions(t, config.AddressesProvided)
	ctx := context.Background()
	if ok, err := inst.InstanceExists(ctx, mkNode("w1", "proxmox://pve-east/101", "", "")); !ok || err != nil {
		t.Fatalf("warm-up: %v %v", ok, err)
	}
	east.addVM(150, "pve1", "new", uuidC)
	ok, err := inst.InstanceExists(ctx, mkNode("new", "proxmox://pve-east/150", "", ""))
	if err != nil || !ok {
		t.Fatalf("InstanceExists(new VM) = %v, %v; want true", ok, err)
	}
	if list, _ := east.counts(); list != 2 {
		t.Errorf("ClusterVMs calls = %d, want 2 (cached list, then one re-read on the miss)", list)
	}
}

func TestInstanceShutdown(t *testing.T) {
	tests := []struct {
		name    string
		node    *v1.Node
		status  string
		want    bool
		wantErr bool
	}{
		{"running", mkNode("w1", "proxmox://pve-east/101", "", ""), "running", false, false},
		{"stopped", mkNode("w1", "proxmox://pve-east/101", "", ""), "stopped", true, false},
		{"unknown is not shutdown", mkNode("w1", "proxmox://pve-east/101", "", ""), "unknown", false, false},
		{"stopped, found by uuid", mkNode("w1", "", strings.ToUpper(uuidA), ""), "stopped", true, false},
		{"foreign", mkNode("w1", "aws:///x/i-1", "", ""), "stopped", false, false},
		{"gone", mkNode("w1", "proxmox://pve-east/109", "", ""), "stopped", false, false},
		{"unknown region", mkNode("w1", "proxmox://nope/101", "", ""), "stopped", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, east, _, _ := twoRegions(t, config.AddressesProvided)
			east.setStatus(101, tt.status)
			got, err := inst.InstanceShutdown(context.Background(), tt.node)
			if (err != nil) != tt.wantErr {
				t.Fatalf("InstanceShutdown err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("InstanceShutdown = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestInstanceMetadataByUUID(t *testing.T) {
	inst, east, _, _ := twoRegions(t, config.AddressesProvided)
	east.configs[102].SMBIOS1 = "uuid=" + strings.ToUpper(uuidB) + ",sku=gp.large"
	md, err := inst.InstanceMetadata(context.Background(), mkNode("w2", "", uuidB, "192.0.2.12"))
	if err != nil {
		t.Fatalf("InstanceMetadata: %v", err)
	}
	want := &cloudprovider.InstanceMetadata{
		ProviderID:   "proxmox://pve-east/102",
		InstanceType: "gp.large",
		Region:       "pve-east",
		Zone:         "pve2",
		NodeAddresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: "192.0.2.12"},
			{Type: v1.NodeHostName, Address: "w2"},
		},
		AdditionalLabels: map[string]string{names.LabelProxmoxHost: "pve2", names.LabelProxmoxVMID: "102"},
	}
	if !reflect.DeepEqual(md, want) {
		t.Errorf("InstanceMetadata =\n%+v\nwant\n%+v", md, want)
	}
}

func TestInstanceMetadataByProviderID(t *testing.T) {
	inst, _, west, _ := twoRegions(t, config.AddressesProvided)
	west.configs[201].Cores, west.configs[201].Sockets, west.configs[201].Memory = 2, 2, 6144
	// The providerID decides even when the UUID points elsewhere.
	md, err := inst.InstanceMetadata(context.Background(), mkNode("w3", "proxmox://pve-west/201", uuidA, "2001:db8::3"))
	if err != nil {
		t.Fatalf("InstanceMetadata: %v", err)
	}
	if md.ProviderID != "proxmox://pve-west/201" || md.InstanceType != "4VCPU-6GB" || md.Region != "pve-west" || md.Zone != "pve9" {
		t.Errorf("InstanceMetadata = %+v", md)
	}
	if got := md.NodeAddresses[0]; got.Type != v1.NodeInternalIP || got.Address != "2001:db8::3" {
		t.Errorf("first address = %+v", got)
	}
}

func TestInstanceMetadataErrors(t *testing.T) {
	tests := []struct {
		name     string
		node     *v1.Node
		setup    func(east, west *fakeClient)
		want     string
		notFound bool
	}{
		{name: "no uuid yet", node: mkNode("w1", "", "", ""), want: "no status.nodeInfo.systemUUID"},
		{name: "no VM with the uuid", node: mkNode("w1", "", "11111111-2222-3333-4444-555555555555", ""), want: "no Proxmox QEMU VM has smbios1 uuid", notFound: true},
		{name: "never by name alone", node: mkNode("w1", "", "11111111-2222-3333-4444-555555555555", ""), want: "no Proxmox QEMU VM", notFound: true},
		{name: "duplicate uuid across regions", node: mkNode("w1", "", uuidA, ""), setup: func(_, w *fakeClient) { w.addVM(250, "pve9", "restored", uuidA) },
			want: "is used by 2 VMs: proxmox://pve-east/101"},
		{name: "templates are not nodes", node: mkNode("t", "", "99999999-2222-3333-4444-555555555555", ""), setup: func(e, _ *fakeClient) {
			e.addVM(900, "pve1", "tmpl", "99999999-2222-3333-4444-555555555555")
			e.vms[len(e.vms)-1].Template = true
		}, want: "no Proxmox QEMU VM", notFound: true},
		{name: "region down and no match elsewhere", node: mkNode("w3", "", uuidC, ""), setup: func(_, w *fakeClient) { w.listErr = errOutage },
			want: "not every VM could be checked"},
		{name: "gone VM by providerID", node: mkNode("w1", "proxmox://pve-east/109", "", ""), want: "proxmox://pve-east/109", notFound: true},
		{name: "foreign providerID", node: mkNode("w1", "gce://p/z/i", "", ""), want: "not a proxmox:// providerID"},
		{name: "bad provided-node-ip", node: mkNode("w1", "proxmox://pve-east/101", "", "w1.example"), want: "is not an IP address"},
		{name: "config unreadable", node: mkNode("w1", "proxmox://pve-east/101", "", ""), setup: func(e, _ *fakeClient) { e.cfgErr[101] = errNoHost },
			want: "reading config of VM 101 on pve1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, east, west, _ := twoRegions(t, config.AddressesProvided)
			if tt.setup != nil {
				tt.setup(east, west)
			}
			md, err := inst.InstanceMetadata(context.Background(), tt.node)
			if err == nil {
				t.Fatalf("InstanceMetadata = %+v, want error %q", md, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
			if got := errors.Is(err, cloudprovider.InstanceNotFound); got != tt.notFound {
				t.Errorf("errors.Is(InstanceNotFound) = %v, want %v (%v)", got, tt.notFound, err)
			}
		})
	}
}

// A VM on an unreachable host cannot be read; a unique match elsewhere still
// initialises the Node, and a VM deleted between list and config is skipped.
func TestUUIDSearchToleratesUnreadableAndVanishedVMs(t *testing.T) {
	inst, east, west, _ := twoRegions(t, config.AddressesProvided)
	west.addVM(300, "pve3", "other", uuidB)
	west.setStatus(300, "unknown")
	west.cfgErr[300] = errNoHost
	east.vms = append(east.vms, pve.VMResource{VMID: 170, Node: "pve1", Type: "qemu", Status: "running"}) // no config: vanished
	md, err := inst.InstanceMetadata(context.Background(), mkNode("w1", "", uuidA, "192.0.2.11"))
	if err != nil {
		t.Fatalf("InstanceMetadata: %v", err)
	}
	if md.ProviderID != "proxmox://pve-east/101" {
		t.Errorf("ProviderID = %q", md.ProviderID)
	}
}

// The name is only a cross-check: a renamed VM still matches by UUID.
func TestUUIDWinsOverName(t *testing.T) {
	inst, _, _, _ := twoRegions(t, config.AddressesProvided)
	md, err := inst.InstanceMetadata(context.Background(), mkNode("w2", "", uuidA, "192.0.2.11"))
	if err != nil {
		t.Fatal(err)
	}
	if md.ProviderID != "proxmox://pve-east/101" {
		t.Errorf("ProviderID = %q, want the UUID's VM 101 (named w1), not the name's", md.ProviderID)
	}
	for vm, node := range map[string]string{"w1": "w1.example.com", "W1": "w1", "w1.lab": "w1"} {
		if !namesMatch(vm, node) {
			t.Errorf("namesMatch(%q, %q) = false", vm, node)
		}
	}
	if namesMatch("w1", "w2") {
		t.Error("namesMatch(w1, w2) = true")
	}
}

func TestInstanceMetadataAgentAddresses(t *testing.T) {
	agentIfaces := []pve.AgentInterface{
		{Name: "lo", Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
		{Name: "eth0", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/24"), netip.MustParsePrefix("fe80::2/64")}},
		{Name: "eth1", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.11/24")}},
		{Name: "kube-ipvs0", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.10/32")}},
	}
	tests := []struct {
		name      string
		mode      config.AddressMode
		status    string
		agentErr  error
		want      []string
		wantCalls int
	}{
		{"provided mode never asks the agent", config.AddressesProvided, "running", nil, []string{"192.0.2.11", "w1"}, 0},
		{"agent mode adds agent addresses", config.AddressesProvidedAndAgent, "running", nil, []string{"192.0.2.11", "198.51.100.11", "w1"}, 1},
		{"agent failure falls back", config.AddressesProvidedAndAgent, "running", errNoHost, []string{"192.0.2.11", "w1"}, 1},
		{"stopped VM: no agent call", config.AddressesProvidedAndAgent, "stopped", nil, []string{"192.0.2.11", "w1"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, east, _, _ := twoRegions(t, tt.mode)
			east.agent[101] = agentIfaces
			east.agentErr = tt.agentErr
			east.setStatus(101, tt.status)
			md, err := inst.InstanceMetadata(context.Background(), mkNode("w1", "proxmox://pve-east/101", "", "192.0.2.11"))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range md.NodeAddresses {
				got = append(got, a.Address)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("addresses = %v, want %v", got, tt.want)
			}
			if east.agentCalls != tt.wantCalls {
				t.Errorf("agent calls = %d, want %d", east.agentCalls, tt.wantCalls)
			}
		})
	}
}

func TestCacheTTLAndErrorsNotCached(t *testing.T) {
	inst, east, west, clock := twoRegions(t, config.AddressesProvided)
	ctx := context.Background()
	node := mkNode("w3", "", uuidC, "192.0.2.13")
	for range 3 {
		if _, err := inst.InstanceMetadata(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	eastList, eastCfg := east.counts()
	westList, westCfg := west.counts()
	if eastList != 1 || westList != 1 || eastCfg[101] != 1 || eastCfg[102] != 1 || westCfg[201] != 1 {
		t.Errorf("within TTL: lists east=%d west=%d, configs east=%v west=%v; want one call each", eastList, westList, eastCfg, westCfg)
	}

	clock.Step(16 * time.Second)
	if _, err := inst.InstanceMetadata(ctx, node); err != nil {
		t.Fatal(err)
	}
	if l, c := west.counts(); l != 2 || c[201] != 2 {
		t.Errorf("after TTL: west list=%d config=%v; want a second call each", l, c)
	}

	// A failure is not remembered: the next call asks again and succeeds.
	clock.Step(16 * time.Second)
	west.mu.Lock()
	west.listErr = errOutage
	west.mu.Unlock()
	if _, err := inst.InstanceExists(ctx, mkNode("w3", "proxmox://pve-west/201", "", "")); err == nil {
		t.Fatal("InstanceExists during outage: no error")
	}
	west.mu.Lock()
	west.listErr = nil
	west.mu.Unlock()
	if ok, err := inst.InstanceExists(ctx, mkNode("w3", "proxmox://pve-west/201", "", "")); err != nil || !ok {
		t.Fatalf("InstanceExists after outage = %v, %v", ok, err)
	}
}

// Many Nodes resolved at once share one list and one config read per VM.
func TestConcurrentLookupsAreShared(t *testing.T) {
	inst, east, _, _ := twoRegions(t, config.AddressesProvided)
	gate := make(chan struct{})
	east.mu.Lock()
	east.gate = gate
	east.mu.Unlock()

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for k := range n {
		wg.Go(func() {
			node := mkNode("w1", "proxmox://pve-east/101", "", "192.0.2.11")
			if k%2 == 1 {
				node = mkNode("w2", "proxmox://pve-east/102", "", "192.0.2.12")
			}
			_, err := inst.InstanceMetadata(context.Background(), node)
			errs <- err
		})
	}
	// Let every goroutine reach the shared call, then release it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l, _ := east.counts(); l >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	list, cfg := east.counts()
	if list != 1 || cfg[101] != 1 || cfg[102] != 1 {
		t.Errorf("list calls = %d, config calls = %v; want 1 each", list, cfg)
	}
}

// A caller that gives up does not fail the others sharing its fetch.
func TestCancelledCallerDoesNotFailOthers(t *testing.T) {
	inst, east, _, _ := twoRegions(t, config.AddressesProvided)
	gate := make(chan struct{})
	east.mu.Lock()
	east.gate = gate
	east.mu.Unlock()

	ctx1, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := inst.InstanceExists(ctx1, mkNode("w1", "proxmox://pve-east/101", "", ""))
		first <- err
	}()
	for l, _ := east.counts(); l == 0; l, _ = east.counts() {
		time.Sleep(time.Millisecond)
	}
	second := make(chan error, 1)
	go func() {
		ok, err := inst.InstanceExists(context.Background(), mkNode("w1", "proxmox://pve-east/101", "", ""))
		if err == nil && !ok {
			err = errors.New("reported gone")
		}
		second <- err
	}()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller err = %v", err)
	}
	close(gate)
	if err := <-second; err != nil {
		t.Errorf("second caller: %v", err)
	}
	if l, _ := east.counts(); l != 1 {
		t.Errorf("list calls = %d, want 1 shared", l)
	}
}
