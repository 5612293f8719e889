package pvesim

import (
	"encoding/base64"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pvelb/pvelb/test/pvesim/schema"
)

type resourceRow struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	VMID     int    `json:"vmid"`
	Node     string `json:"node"`
	Status   string `json:"status"`
	Name     string `json:"name"`
	Template int    `json:"template"`
	MaxCPU   int    `json:"maxcpu"`
	MaxMem   int64  `json:"maxmem"`
	Tags     string `json:"tags"`
}

func TestClusterResources(t *testing.T) {
	ts, c := newSim(t, Options{})
	var rows []resourceRow
	c.do("GET", "/cluster/resources", vals("type", "vm")).want(t, "200 OK").decode(t, &rows)
	if len(rows) != 3 {
		t.Fatalf("rows %+v", rows)
	}
	want := resourceRow{ID: "qemu/100", Type: "qemu", VMID: 100, Node: "pve1", Status: "running", Name: "talos-cp-1",
		MaxCPU: 2, MaxMem: 4096 << 20, Tags: "k8s;talos"}
	if rows[0] != want {
		t.Errorf("row %+v, want %+v", rows[0], want)
	}
	if rows[1].Status != "stopped" || rows[2].Template != 1 || rows[1].MaxCPU != 8 {
		t.Errorf("rows %+v", rows[1:])
	}

	ts.SetHostOnline("pve2", false)
	c.do("GET", "/cluster/resources", vals("type", "vm")).want(t, "200 OK").decode(t, &rows)
	for _, r := range rows {
		if wantStatus := map[int]string{100: "running", 101: "unknown", 102: "unknown"}[r.VMID]; r.Status != wantStatus {
			t.Errorf("vm %d status %q, want %q", r.VMID, r.Status, wantStatus)
		}
	}
	var all []resourceRow
	c.do("GET", "/cluster/resources", nil).want(t, "200 OK").decode(t, &all)
	nodes := map[string]string{}
	for _, r := range all {
		if r.Type == "node" {
			nodes[r.Node] = r.Status
		}
	}
	if nodes["pve1"] != "online" || nodes["pve2"] != "offline" {
		t.Errorf("node rows %v", nodes)
	}
	// Calls proxied to the offline host fail like pveproxy; firewall calls
	// (not proxied) keep working.
	c.do("GET", "/nodes/pve2/qemu/101/config", nil).want(t, "595 Errors during connection establishment, proxy handshake: No route to host")
	c.do("GET", "/nodes/pve2/qemu/101/firewall/ipset", nil).want(t, "200 OK")
	c.do("GET", "/nodes/pve9/qemu/101/status/current", nil).
		want(t, "500 hostname lookup 'pve9' failed - failed to get address info for: pve9: Name or service not known")
	ts.SetHostOnline("pve2", true)
	c.do("GET", "/nodes/pve2/qemu/101/config", nil).want(t, "200 OK")
}

func TestVMConfigStatusAgent(t *testing.T) {
	ts, c := newSim(t, Options{})
	var cfg map[string]any
	c.do("GET", "/nodes/pve1/qemu/100/config", nil).want(t, "200 OK").decode(t, &cfg)
	sku := base64.StdEncoding.EncodeToString([]byte("talos-cp"))
	checks := map[string]any{
		"name": "talos-cp-1", "cores": float64(2), "sockets": float64(1), "memory": "4096", "agent": "1", "tags": "k8s;talos",
		"smbios1": "uuid=5f7c2a3e-1111-4a2b-9c3d-000000000100,sku=" + sku + ",base64=1",
		"net0":    "virtio=BC:24:11:AA:BB:01,bridge=vmbr0,firewall=1",
	}
	for k, v := range checks {
		if cfg[k] != v {
			t.Errorf("config %s = %#v, want %#v", k, cfg[k], v)
		}
	}
	if d, _ := cfg["digest"].(string); len(d) != 40 {
		t.Errorf("digest %v", cfg["digest"])
	}
	c.do("GET", "/nodes/pve2/qemu/100/config", nil).want(t, "500 Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist")
	c.do("GET", "/nodes/pve1/qemu/100/config", vals("current", "1")).want(t, "200 OK")

	var st map[string]any
	c.do("GET", "/nodes/pve1/qemu/100/status/current", nil).want(t, "200 OK").decode(t, &st)
	if st["status"] != "running" || st["qmpstatus"] != "running" || st["name"] != "talos-cp-1" || st["agent"] != float64(1) {
		t.Errorf("status %v", st)
	}

	var agent struct {
		Result []struct {
			Name  string `json:"name"`
			MAC   string `json:"hardware-address"`
			Addrs []struct {
				IP     string `json:"ip-address"`
				Type   string `json:"ip-address-type"`
				Prefix int    `json:"prefix"`
			} `json:"ip-addresses"`
		} `json:"result"`
	}
	c.do("GET", "/nodes/pve1/qemu/100/agent/network-get-interfaces", nil).want(t, "200 OK").decode(t, &agent)
	if len(agent.Result) != 1 || agent.Result[0].MAC != "bc:24:11:aa:bb:01" || len(agent.Result[0].Addrs) != 2 ||
		agent.Result[0].Addrs[1].Type != "ipv6" || agent.Result[0].Addrs[0].Prefix != 24 {
		t.Errorf("agent %+v", agent)
	}
	c.do("GET", "/nodes/pve2/qemu/101/agent/network-get-interfaces", nil).want(t, "500 VM 101 is not running")
	ts.SetVMStatus(101, "running")
	c.do("GET", "/nodes/pve2/qemu/101/agent/network-get-interfaces", nil).want(t, "500 No QEMU guest agent configured")

	var list []map[string]any
	c.do("GET", "/nodes/pve2/qemu", nil).want(t, "200 OK").decode(t, &list)
	if len(list) != 2 {
		t.Errorf("node list %v", list)
	}
	ts.DeleteVM(100)
	c.do("GET", "/nodes/pve1/qemu/100/config", nil).want(t, "500 Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist")
	if err := ts.AddVM(VM{VMID: 101, Node: "pve1"}); err == nil {
		t.Error("AddVM accepted a duplicate VMID")
	}
	if err := ts.AddVM(VM{VMID: 50, Node: "pve1"}); err == nil {
		t.Error("AddVM accepted VMID 50")
	}
}

func TestPrivileges(t *testing.T) {
	tokens := []Token{
		{ID: "admin@pve!all", Secret: "s-all"},
		{ID: "audit@pve!ro", Secret: "s-ro", Privileges: []string{"Sys.Audit", "VM.Audit@/vms/100"}},
		{ID: "ccm@pve!vm100", Secret: "s-100", Privileges: []string{"VM.Audit@/vms/100", "VM.Config.Network@/vms/100", "VM.GuestAgent.Audit@/vms"}},
		{ID: "ccm@pve!none", Secret: "s-none", Privileges: []string{}},
	}
	cases := []struct {
		token, method, path string
		status              string
	}{
		{"audit@pve!ro", "GET", "/cluster/firewall/ipset", "200 OK"},
		{"audit@pve!ro", "POST", "/cluster/firewall/ipset?name=xx", "403 Permission check failed (/, Sys.Modify)"},
		{"ccm@pve!vm100", "GET", "/cluster/firewall/ipset", "403 Permission check failed (/, Sys.Audit)"},
		{"ccm@pve!vm100", "GET", "/nodes/pve1/qemu/100/firewall/ipset", "200 OK"},
		{"ccm@pve!vm100", "GET", "/nodes/pve2/qemu/101/firewall/ipset", "403 Permission check failed (/vms/101, VM.Audit)"},
		{"audit@pve!ro", "POST", "/nodes/pve1/qemu/100/firewall/ipset?name=xx", "403 Permission check failed (/vms/100, VM.Config.Network)"},
		{"ccm@pve!vm100", "POST", "/nodes/pve1/qemu/100/firewall/ipset?name=xx", "200 OK"},
		{"ccm@pve!vm100", "GET", "/nodes/pve1/qemu/100/agent/network-get-interfaces", "200 OK"},
		{"audit@pve!ro", "GET", "/nodes/pve1/qemu/100/agent/network-get-interfaces",
			"403 Permission check failed (/vms/100, VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted)"},
		{"ccm@pve!none", "GET", "/version", "200 OK"},
		{"ccm@pve!none", "GET", "/nodes/pve1/qemu/100/config", "403 Permission check failed (/vms/100, VM.Audit)"},
	}
	ts, c := newSim(t, Options{Tokens: tokens})
	secrets := map[string]string{}
	for _, tok := range tokens {
		secrets[tok.ID] = tok.Secret
	}
	for _, tc := range cases {
		t.Run(tc.token+" "+tc.method+" "+tc.path, func(t *testing.T) {
			// Write parameters travel in the body, as real clients send them.
			path, query, _ := strings.Cut(tc.path, "?")
			var params url.Values
			if query != "" {
				params = vals("name", query[len("name="):])
			}
			c.withToken(tc.token, secrets[tc.token]).do(tc.method, path, params).want(t, tc.status)
		})
	}
	// /cluster/resources lists only VMs the token may audit.
	var rows []resourceRow
	c.withToken("ccm@pve!vm100", "s-100").do("GET", "/cluster/resources", vals("type", "vm")).want(t, "200 OK").decode(t, &rows)
	if len(rows) != 1 || rows[0].VMID != 100 {
		t.Errorf("filtered resources %+v", rows)
	}
	_ = ts
}

// TestPVE8Schema checks that privileges come from the loaded schema: PVE 8
// guards the guest agent with VM.Monitor.
func TestPVE8Schema(t *testing.T) {
	dir, err := schema.FindDir()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err) // CI has ../shared: a missing schema is a broken checkout
		}
		t.Skip(err)
	}
	tokens := []Token{{ID: "ccm@pve!agent", Secret: "s", Privileges: []string{"VM.GuestAgent.Audit", "VM.Audit"}},
		{ID: "ccm@pve!mon", Secret: "m", Privileges: []string{"VM.Monitor"}}}
	ts, c := newSim(t, Options{Tokens: tokens, SchemaFile: filepath.Join(dir, schema.PVE8File)})
	var v struct{ Release string }
	c.withToken("ccm@pve!agent", "s").do("GET", "/version", nil).want(t, "200 OK").decode(t, &v)
	if v.Release != "8.4" {
		t.Errorf("release %q", v.Release)
	}
	c.withToken("ccm@pve!agent", "s").do("GET", "/nodes/pve1/qemu/100/agent/network-get-interfaces", nil).
		want(t, "403 Permission check failed (/vms/100, VM.Monitor)")
	c.withToken("ccm@pve!mon", "m").do("GET", "/nodes/pve1/qemu/100/agent/network-get-interfaces", nil).want(t, "200 OK")
	_ = ts
}
