package pvesim

import (
	"reflect"
	"sync"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
)

// The snapshot shows what API writes and administrator helpers left, and is
// a copy: changing it changes nothing in the server.
func TestFirewallSnapshot(t *testing.T) {
	ts, c := newSim(t, Options{})
	st := ts.FirewallSnapshot()
	if st.DatacenterEnabled() || len(st.VMs) != 3 || len(st.VMs[0].Options) != 0 || len(st.VMs[0].IPSets) != 0 {
		t.Fatalf("fresh snapshot %+v", st)
	}

	ts.SetClusterFirewall(true)
	c.do("PUT", "/nodes/pve1/qemu/100/firewall/options", vals("enable", "1", "ipfilter", "1", "macfilter", "0")).want(t, "200 OK")
	c.do("POST", "/nodes/pve1/qemu/100/firewall/ipset", vals("name", "IPFilter-Net0")).want(t, "200 OK")
	c.do("POST", "/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0", vals("cidr", "192.0.2.10/32")).want(t, "200 OK")
	c.do("POST", "/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0", vals("cidr", "192.0.2.0/24", "nomatch", "1")).want(t, "200 OK")

	st = ts.FirewallSnapshot()
	if !st.DatacenterEnabled() {
		t.Error("datacenter firewall off after SetClusterFirewall(true)")
	}
	vm := st.VMs[0]
	if vm.VMID != 100 || vm.Node != "pve1" || vm.Status != "running" || vm.Nets[0] != "virtio=BC:24:11:AA:BB:01,bridge=vmbr0,firewall=1" {
		t.Errorf("vm %+v", vm)
	}
	if want := map[string]string{"enable": "1", "ipfilter": "1", "macfilter": "0"}; !reflect.DeepEqual(vm.Options, want) {
		t.Errorf("options %v, want %v", vm.Options, want)
	}
	want := map[string][]pve.IPSetEntry{"ipfilter-net0": {{CIDR: "192.0.2.0/24", NoMatch: true}, {CIDR: "192.0.2.10"}}}
	if !reflect.DeepEqual(vm.IPSets, want) {
		t.Errorf("ipsets %+v, want %+v", vm.IPSets, want)
	}

	vm.Options["enable"] = "0"
	vm.IPSets["ipfilter-net0"][0].CIDR = "198.51.100.0/24"
	vm.Nets[0] = "e1000=BC:24:11:AA:BB:09"
	st.ClusterOptions["enable"] = "0"
	again := ts.FirewallSnapshot()
	if !again.DatacenterEnabled() || again.VMs[0].Options["enable"] != "1" ||
		again.VMs[0].IPSets["ipfilter-net0"][0].CIDR != "192.0.2.0/24" || again.VMs[0].Nets[0] == vm.Nets[0] {
		t.Errorf("changing a snapshot changed the server: %+v", again)
	}

	ts.DeleteVM(100)
	if st := ts.FirewallSnapshot(); len(st.VMs) != 2 || st.VMs[0].VMID != 101 {
		t.Errorf("after DeleteVM: %+v", st.VMs)
	}
}

// Snapshots may be taken while the API writes (run with -race).
func TestFirewallSnapshotConcurrent(t *testing.T) {
	ts, c := newSim(t, Options{})
	c.do("POST", "/nodes/pve1/qemu/100/firewall/ipset", vals("name", "ipfilter-net0")).want(t, "200 OK")
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 50 {
			st := ts.FirewallSnapshot()
			for _, vm := range st.VMs {
				for _, entries := range vm.IPSets {
					_ = len(entries)
				}
			}
		}
	})
	for i := range 20 {
		c.do("POST", "/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0", vals("cidr", ipEntryFor(i).CIDR)).want(t, "200 OK")
	}
	wg.Wait()
	if n := len(ts.FirewallSnapshot().VMs[0].IPSets["ipfilter-net0"]); n != 20 {
		t.Errorf("%d entries, want 20", n)
	}
}
