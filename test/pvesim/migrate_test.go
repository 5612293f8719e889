package pvesim

import (
	"strings"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
)

// TestMigrate: qm migrate through the API moves the VM with its config and
// firewall; the checks qemu-server makes are made, and the schema's.
func TestMigrate(t *testing.T) {
	ts, c := newSim(t, Options{})
	ts.SeedIPSet(vmScope(100), "ipfilter-net0", pve.IPSetEntry{CIDR: "192.0.2.10"})

	c.do("POST", "/nodes/pve1/qemu/100/migrate", vals("target", "pve2")).want(t, "500 can't migrate running VM without --online")
	c.do("POST", "/nodes/pve1/qemu/100/migrate", vals("target", "pve1", "online", "1")).want(t, "500 target is local node.")
	c.do("POST", "/nodes/pve1/qemu/100/migrate", vals("target", "pve7", "online", "1")).want(t, "500 no such cluster node 'pve7'")
	c.do("POST", "/nodes/pve2/qemu/100/migrate", vals("target", "pve1", "online", "1")).
		want(t, "500 Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist")
	if r := c.do("POST", "/nodes/pve1/qemu/100/migrate", vals("target", "pve2", "online", "yes")); r.Errors["online"] == "" {
		t.Fatalf("online=yes accepted: %+v", r)
	}
	ts.SetHostOnline("pve3", false)
	c.do("POST", "/nodes/pve1/qemu/100/migrate", vals("target", "pve3", "online", "1")).want(t, "500 target node 'pve3' is not online")

	var upid string
	c.do("POST", "/nodes/pve1/qemu/100/migrate", vals("target", "pve2", "online", "1")).want(t, "200 OK").decode(t, &upid)
	if !strings.HasPrefix(upid, "UPID:pve1:") || !strings.Contains(upid, ":qmigrate:100:") {
		t.Fatalf("UPID %q", upid)
	}
	var rows []resourceRow
	c.do("GET", "/cluster/resources", vals("type", "vm")).want(t, "200 OK").decode(t, &rows)
	if rows[0].VMID != 100 || rows[0].Node != "pve2" || rows[0].Status != "running" {
		t.Fatalf("after migration: %+v", rows[0])
	}
	c.do("GET", "/nodes/pve2/qemu/100/config", nil).want(t, "200 OK")
	c.do("GET", "/nodes/pve1/qemu/100/config", nil).want(t, "500 Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist")
	if got := ts.IPSetEntries(pve.VMScope(pve.VMRef{Node: "pve2", VMID: 100}), "ipfilter-net0"); len(got) != 1 {
		t.Fatalf("firewall did not move with the VM: %+v", got)
	}

	// A stopped VM moves without online.
	c.do("POST", "/nodes/pve2/qemu/101/migrate", vals("target", "pve1")).want(t, "200 OK")
}

func TestMigrateHelper(t *testing.T) {
	ts, _ := newSim(t, Options{})
	if err := ts.Migrate(100, "pve1", "pve2"); err != nil {
		t.Fatal(err)
	}
	if err := ts.Migrate(100, "pve1", "pve2"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("second migration from the old host: %v; want the config missing there", err)
	}
}
