package instances

import (
	"context"
	"testing"
	"time"
)

// TestListVMsSharesTheNodeLookupsList: the firewall's VM index and the
// Node lookups read one cached list per region; maxAge makes a younger one
// read, and an unknown region is an error.
func TestListVMsSharesTheNodeLookupsList(t *testing.T) {
	inst, east, _, clock := twoRegions(t, "")
	ctx := context.Background()
	if _, err := inst.VMForNode(ctx, mkNode("w1", "proxmox://pve-east/101", "", "")); err != nil {
		t.Fatal(err)
	}
	vms, at, err := inst.ListVMs(ctx, "pve-east", 30*time.Second)
	if err != nil || len(vms) != 2 || !at.Equal(clock.Now()) {
		t.Fatalf("ListVMs = %d VMs at %v, %v; want the lookup's 2 VMs at %v", len(vms), at, err, clock.Now())
	}
	if n, _ := east.counts(); n != 1 {
		t.Fatalf("%d VM lists, want the lookup's one shared", n)
	}
	clock.Step(3 * time.Second)
	_, at, err = inst.ListVMs(ctx, "pve-east", 2*time.Second)
	if n, _ := east.counts(); err != nil || !at.Equal(clock.Now()) || n != 2 {
		t.Fatalf("a list older than maxAge was not read again (at %v, %v, %d lists)", at, err, n)
	}
	if _, _, err := inst.ListVMs(ctx, "nowhere", time.Second); err == nil {
		t.Error("ListVMs of an unknown region did not fail")
	}
}
