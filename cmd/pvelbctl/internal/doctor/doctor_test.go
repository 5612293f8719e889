package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

func TestNeedsAndMissing(t *testing.T) {
	tests := []struct {
		name           string
		vmids          []int
		fw, agent      bool
		major          int
		have           map[string]map[string]bool
		wantMissing    []string
		wantNeedsCount int
	}{
		{name: "all held", vmids: []int{101}, fw: true, major: 9,
			have: map[string]map[string]bool{
				"/vms/101": {"VM.Audit": true, "VM.Config.Network": true},
				"/":        {"Sys.Audit": true, "Sys.Modify": true},
			}, wantNeedsCount: 4},
		{name: "no network privilege", vmids: []int{101, 102}, fw: true, major: 9,
			have: map[string]map[string]bool{
				"/vms/101": {"VM.Audit": true}, "/vms/102": {"VM.Audit": true},
				"/": {"Sys.Audit": true, "Sys.Modify": true},
			}, wantMissing: []string{"VM.Config.Network on /vms/101, /vms/102"}, wantNeedsCount: 6},
		{name: "firewall off needs no write privileges", vmids: []int{101},
			have: map[string]map[string]bool{"/vms/101": {"VM.Audit": true}}, wantNeedsCount: 1},
		{name: "agent on PVE 8 needs VM.Monitor", vmids: []int{101}, agent: true, major: 8,
			have:        map[string]map[string]bool{"/vms/101": {"VM.Audit": true, "VM.GuestAgent.Audit": true}},
			wantMissing: []string{"VM.Monitor on /vms/101"}, wantNeedsCount: 2},
		{name: "agent on PVE 9", vmids: []int{101}, agent: true, major: 9,
			have:        map[string]map[string]bool{"/vms/101": {"VM.Audit": true}},
			wantMissing: []string{"VM.GuestAgent.Audit on /vms/101"}, wantNeedsCount: 2},
		{name: "no VMs known: checked on /vms", fw: false, major: 9,
			have: map[string]map[string]bool{}, wantMissing: []string{"VM.Audit on /vms"}, wantNeedsCount: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			needs := Needs(tt.vmids, tt.fw, tt.agent, tt.major)
			if len(needs) != tt.wantNeedsCount {
				t.Errorf("%d needs %v, want %d", len(needs), needs, tt.wantNeedsCount)
			}
			got := GroupMissing(Missing(needs, tt.have))
			if fmt.Sprint(got) != fmt.Sprint(tt.wantMissing) {
				t.Errorf("missing %q, want %q", got, tt.wantMissing)
			}
		})
	}
}

func TestAssessNIC(t *testing.T) {
	own := []netip.Addr{netip.MustParseAddr("192.0.2.11")}
	entry := func(cidr, comment string) pve.IPSetEntry { return pve.IPSetEntry{CIDR: cidr, Comment: comment} }
	tests := []struct {
		name    string
		nic     NIC
		managed bool
		want    Severity
		msg     string
	}{
		{"no such NIC", NIC{Name: "net1"}, true, Warn, "has no net1"},
		{"VM firewall off", NIC{Name: "net0", Present: true, Firewall: true, IPFilter: true}, true, OK, "inactive"},
		{"NIC firewall=0", NIC{Name: "net0", Present: true, VMFirewall: true, IPFilter: true}, true, OK, "firewall=0"},
		{"ipfilter=1, no set, managed", NIC{Name: "net0", Present: true, Firewall: true, VMFirewall: true, IPFilter: true}, true, OK, "pvelb creates it"},
		{"ipfilter=1, no set, unmanaged", NIC{Name: "net0", Present: true, Firewall: true, VMFirewall: true, IPFilter: true}, false, Fail, "management is off"},
		{"set lacks own IP", NIC{Name: "net0", Present: true, Firewall: true, VMFirewall: true, SetExists: true,
			Entries: []pve.IPSetEntry{entry("192.0.2.200", "pvelb: default/web")}, OwnIPs: own}, true, Fail, "lacks the VM's own address 192.0.2.11"},
		{"own IP as nomatch does not count", NIC{Name: "net0", Present: true, Firewall: true, VMFirewall: true, SetExists: true,
			Entries: []pve.IPSetEntry{{CIDR: "192.0.2.11", NoMatch: true}}, OwnIPs: own}, true, Fail, "lacks"},
		{"own IP inside a CIDR", NIC{Name: "net0", Present: true, Firewall: true, VMFirewall: true, SetExists: true,
			Entries: []pve.IPSetEntry{entry("192.0.2.0/24", "lan"), entry("192.0.2.200", "pvelb: default/web")}, OwnIPs: own}, true, OK, "1 written by pvelb"},
		{"set active, unmanaged", NIC{Name: "net0", Present: true, Firewall: true, VMFirewall: true, SetExists: true,
			Entries: []pve.IPSetEntry{entry("192.0.2.11", "")}, OwnIPs: own}, false, Fail, "management is off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sev, msg, fix := AssessNIC(tt.nic, tt.managed, "/nodes/pve1/qemu/101")
			if sev != tt.want || !strings.Contains(msg, tt.msg) {
				t.Errorf("got %v %q, want %v containing %q", sev, msg, tt.want, tt.msg)
			}
			if sev != OK && fix == "" {
				t.Errorf("a %v finding without a fix: %q", sev, msg)
			}
		})
	}
}

func TestAssessPools(t *testing.T) {
	pool := func(name string, addrs ...string) v1alpha1.IPPool {
		return v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.IPPoolSpec{Addresses: addrs}}
	}
	if f := AssessPools(nil); len(f) != 1 || f[0].Severity != Warn {
		t.Errorf("no pools: %+v", f)
	}
	f := AssessPools([]v1alpha1.IPPool{pool("a", "192.0.2.0/28"), pool("b", "192.0.2.10-192.0.2.20"), pool("c", "198.51.100.0/30")})
	var fails []string
	for _, x := range f {
		if x.Severity == Fail {
			fails = append(fails, x.Message)
		}
	}
	if fmt.Sprint(fails) != "[IPPool a overlaps b IPPool b overlaps a]" {
		t.Errorf("overlap findings %q", fails)
	}
	f = AssessPools([]v1alpha1.IPPool{pool("bad", "192.0.2.300")})
	if len(f) == 0 || f[0].Severity != Fail || !strings.Contains(f[0].Message, "IPPool bad") {
		t.Errorf("unparseable pool: %+v", f)
	}
}

// simCluster is a Proxmox simulator with two VMs of a cluster: 101 with its
// own address in ipfilter-net0, 102 whose set lacks it.
func simCluster(t *testing.T, tokens []pvesim.Token) (*pvesim.TestServer, []corev1.Node) {
	t.Helper()
	sim := pvesim.NewTestServer(t, pvesim.Options{Tokens: tokens})
	for _, v := range []struct {
		id   int
		host string
	}{{101, "pve1"}, {102, "pve2"}} {
		if err := sim.AddVM(pvesim.VM{VMID: v.id, Node: v.host, Name: fmt.Sprintf("talos-%d", v.id),
			UUID: fmt.Sprintf("6b7d1f4e-0c1a-4a53-9b0e-000000000%d", v.id),
			Nets: map[int]string{0: fmt.Sprintf("virtio=BC:24:11:00:00:%02X,bridge=vmbr0,firewall=1", v.id-100)}}); err != nil {
			t.Fatal(err)
		}
		sim.SetFirewallOptions(v.id, true, true)
	}
	sim.SeedIPSet(pve.VMScope(pve.VMRef{Node: "pve1", VMID: 101}), "ipfilter-net0", pve.IPSetEntry{CIDR: "192.0.2.11", Comment: "node address"})
	sim.SeedIPSet(pve.VMScope(pve.VMRef{Node: "pve2", VMID: 102}), "ipfilter-net0", pve.IPSetEntry{CIDR: "192.0.2.99", Comment: "old address"})
	nodes := []corev1.Node{
		{ // initialised by pvelb-ccm
			ObjectMeta: metav1.ObjectMeta{Name: "talos-101"},
			Spec:       corev1.NodeSpec{ProviderID: "proxmox://lab/101"},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.11"}}},
		},
		{ // not yet initialised: matched by systemUUID, address from the kubelet's annotation
			ObjectMeta: metav1.ObjectMeta{Name: "talos-102", Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": "192.0.2.12"}},
			Status:     corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{SystemUUID: "6B7D1F4E-0C1A-4A53-9B0E-000000000102"}},
		},
		{ // no VM anywhere
			ObjectMeta: metav1.ObjectMeta{Name: "stray"},
			Status:     corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{SystemUUID: "00000000-0000-0000-0000-000000000001"}},
		},
	}
	return sim, nodes
}

func cloudConfig(t *testing.T, sim *pvesim.TestServer, secret string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`clusters:
  - region: lab
    url: %s
    tokenID: %q
    tokenSecret: %q
    caFile: %s
    timeout: 3s
`, sim.URL, sim.TokenID, secret, sim.CAFile)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func findings(r Report, sev Severity, area string) []string {
	var out []string
	for _, f := range r.Findings {
		if f.Severity == sev && strings.HasPrefix(f.Area, area) {
			out = append(out, f.Message)
		}
	}
	return out
}

func TestDoctorAgainstSimulator(t *testing.T) {
	const secret = "0f3c2b1a-1111-2222-3333-444455556666"
	t.Run("token lacking VM.Config.Network", func(t *testing.T) {
		sim, nodes := simCluster(t, []pvesim.Token{{ID: "pvelb@pve!ccm", Secret: secret,
			Privileges: []string{"VM.Audit@/vms", "Sys.Audit@/", "Sys.Modify@/"}}})
		r := Run(context.Background(), cloudConfig(t, sim, secret), nodes, nil)
		var out bytes.Buffer
		Render(&out, r)
		t.Logf("report:\n%s", out.String())
		fails := strings.Join(findings(r, Fail, "proxmox"), "\n")
		if !strings.Contains(fails, "lacks privileges: VM.Config.Network on /vms/101, /vms/102") {
			t.Errorf("missing privilege not named exactly; proxmox failures:\n%s", fails)
		}
		if strings.Contains(fails, "VM.Audit") || strings.Contains(fails, "Sys.") {
			t.Errorf("privileges the token holds reported missing:\n%s", fails)
		}
		if strings.Contains(out.String(), secret) {
			t.Fatal("the token secret appears in the report")
		}
		if got := findings(r, Fail, "node talos-102"); len(got) != 1 || !strings.Contains(got[0], "lacks the VM's own address 192.0.2.12") {
			t.Errorf("talos-102 failures %q, want its own address missing from ipfilter-net0", got)
		}
		if got := findings(r, Fail, "node talos-101"); len(got) != 0 {
			t.Errorf("talos-101 failures %q, want none", got)
		}
		if got := findings(r, Fail, "node stray"); len(got) != 1 || !strings.Contains(got[0], "no Proxmox VM matched") {
			t.Errorf("stray node failures %q", got)
		}
		if !strings.Contains(out.String(), "pvesh create /nodes/pve2/qemu/102/firewall/ipset/ipfilter-net0 --cidr 192.0.2.12") {
			t.Errorf("report lacks the fix command for talos-102")
		}
	})

	t.Run("full token: only the real problems", func(t *testing.T) {
		sim, nodes := simCluster(t, []pvesim.Token{{ID: "pvelb@pve!ccm", Secret: secret}})
		r := Run(context.Background(), cloudConfig(t, sim, secret), nodes[:2], nil)
		if got := findings(r, Fail, "proxmox"); len(got) != 0 {
			t.Errorf("proxmox failures with an all-privilege token: %q", got)
		}
		if got := findings(r, OK, "proxmox"); len(got) != 2 || !strings.Contains(got[1], "every privilege") {
			t.Errorf("proxmox ok findings %q", got)
		}
		fails, _ := r.Problems()
		if fails != 1 { // talos-102's ipfilter-net0
			var b bytes.Buffer
			Render(&b, r)
			t.Errorf("%d failures, want 1:\n%s", fails, b.String())
		}
	})

	t.Run("duplicate smbios1 uuid: named, not guessed", func(t *testing.T) {
		sim, nodes := simCluster(t, []pvesim.Token{{ID: "pvelb@pve!ccm", Secret: secret}})
		if err := sim.AddVM(pvesim.VM{VMID: 103, Node: "pve1", Name: "clone", UUID: "6b7d1f4e-0c1a-4a53-9b0e-000000000102"}); err != nil {
			t.Fatal(err)
		}
		r := Run(context.Background(), cloudConfig(t, sim, secret), nodes[1:2], nil)
		warns := strings.Join(findings(r, Warn, "node talos-102"), "\n")
		if !strings.Contains(warns, "used by 2 VMs") || !strings.Contains(warns, "proxmox://lab/102") || !strings.Contains(warns, "proxmox://lab/103") {
			t.Errorf("talos-102 warnings %q, want the duplicate uuid named with both VMs", warns)
		}
		if got := findings(r, Fail, "node talos-102"); len(got) != 1 || !strings.Contains(got[0], "no Proxmox VM matched") {
			t.Errorf("talos-102 failures %q, want it unmatched", got)
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		sim, nodes := simCluster(t, []pvesim.Token{{ID: "pvelb@pve!ccm", Secret: secret}})
		const wrong = "99999999-wrong-secret-value-000000000000"
		r := Run(context.Background(), cloudConfig(t, sim, wrong), nodes, nil)
		var b bytes.Buffer
		Render(&b, r)
		if got := findings(r, Fail, "proxmox"); len(got) != 1 || !strings.Contains(got[0], "401") {
			t.Errorf("proxmox failures %q, want one 401", got)
		}
		if !strings.Contains(b.String(), "the token is unknown or its secret wrong") {
			t.Errorf("no fix for a wrong secret:\n%s", b.String())
		}
		if strings.Contains(b.String(), wrong) || strings.Contains(b.String(), secret) {
			t.Fatal("a secret appears in the report")
		}
	})
}

// TestDoctorEndpoints: with several urls, doctor names the host that does
// not answer (a warning: pvelb fails over) and a URL of another cluster's
// host (a failure), and says nothing of endpoints when all is well.
func TestDoctorEndpoints(t *testing.T) {
	const secret = "0f3c2b1a-1111-2222-3333-444455556666"
	tokens := []pvesim.Token{{ID: "pvelb@pve!ccm", Secret: secret}}
	sim, nodes := simCluster(t, tokens)
	a, b := sim.AddEndpoint(t), sim.AddEndpoint(t)
	other := pvesim.NewTestServer(t, pvesim.Options{Tokens: tokens})
	if err := other.AddVM(pvesim.VM{VMID: 500, Node: "elsewhere", Name: "x"}); err != nil {
		t.Fatal(err)
	}
	// Trust both clusters' CAs, so the other cluster's host is told apart by
	// what it lists, not by its certificate.
	both := filepath.Join(t.TempDir(), "cas.pem")
	var pems []byte
	for _, f := range []string{sim.CAFile, other.CAFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, b...)
	}
	if err := os.WriteFile(both, pems, 0o600); err != nil {
		t.Fatal(err)
	}
	withURLs := func(urls ...string) *config.Config {
		cfg := cloudConfig(t, sim, secret)
		cfg.Clusters[0].URLs, cfg.Clusters[0].CAFile = urls, both
		return cfg
	}

	r := Run(context.Background(), withURLs(a.URL, b.URL), nodes[:2], nil)
	if got := findings(r, OK, "proxmox"); !strings.Contains(strings.Join(got, "\n"), "all 2 urls answer and list the same VMs") {
		t.Errorf("healthy endpoints: ok findings %q", got)
	}
	if got := findings(r, Warn, "proxmox"); len(got) != 0 {
		t.Errorf("healthy endpoints: warnings %q", got)
	}

	a.Stop()
	r = Run(context.Background(), withURLs(a.URL, b.URL, other.URL), nodes[:2], nil)
	var out bytes.Buffer
	Render(&out, r)
	t.Logf("report:\n%s", out.String())
	if got := findings(r, Warn, "proxmox"); len(got) != 1 || !strings.Contains(got[0], "urls[0] "+a.URL+" does not answer") {
		t.Errorf("stopped endpoint: warnings %q; want urls[0] named", got)
	}
	if got := findings(r, Fail, "proxmox"); len(got) != 1 || !strings.Contains(got[0], "urls[2] "+other.URL+" lists 1 VMs") {
		t.Errorf("another cluster's host: failures %q; want urls[2] named", got)
	}
	// The checks after it still ran, through the host that answers.
	if got := findings(r, OK, "proxmox"); !strings.Contains(strings.Join(got, "\n"), "every privilege") {
		t.Errorf("privileges not checked through the answering endpoint: %q", got)
	}
}

// TestDoctorCAPMOXProviderID: a Node with Cluster API Proxmox's
// proxmox://<uuid> is matched to the VM with that uuid, not reported as
// without a VM.
func TestDoctorCAPMOXProviderID(t *testing.T) {
	const secret = "0f3c2b1a-1111-2222-3333-444455556666"
	sim, nodes := simCluster(t, []pvesim.Token{{ID: "pvelb@pve!ccm", Secret: secret}})
	n := nodes[1] // talos-102, not initialised
	n.Spec.ProviderID = "proxmox://6b7d1f4e-0c1a-4a53-9b0e-000000000102"
	n.Status.NodeInfo.SystemUUID = ""
	r := Run(context.Background(), cloudConfig(t, sim, secret), []corev1.Node{n}, nil)
	if got := findings(r, OK, "node talos-102"); len(got) == 0 || !strings.Contains(got[0], `VM 102 "talos-102" on pve2`) {
		var b bytes.Buffer
		Render(&b, r)
		t.Fatalf("Node with a proxmox://<uuid> providerID not matched to VM 102:\n%s", b.String())
	}
}

func TestAssessMembership(t *testing.T) {
	hears := func(node string, peers ...string) AnnouncerStatus {
		s := AnnouncerStatus{Node: node, Hears: map[string]bool{}}
		for _, p := range peers {
			s.Hears[p] = true
		}
		return s
	}
	for _, tc := range []struct {
		name string
		sts  []AnnouncerStatus
		want []string // severity: message substring, in order
	}{
		{"all hear each other", []AnnouncerStatus{hears("a", "b", "c"), hears("b", "a", "c"), hears("c", "a", "b")},
			[]string{"ok: 3 announcers all hear each other"}},
		{"one pair cut both ways", []AnnouncerStatus{hears("c", "a"), hears("a", "b", "c"), hears("b", "a")},
			[]string{"FAIL: b and c do not hear each other's heartbeats"}},
		{"one way", []AnnouncerStatus{hears("a", "b"), hears("b")},
			[]string{"FAIL: b does not hear a (a hears b): heartbeats from a are lost"}},
		{"unreadable", []AnnouncerStatus{hears("a", "b"), hears("b", "a"), {Node: "c", Err: fmt.Errorf("connection refused")}},
			[]string{"warn: c: announcer status not readable: connection refused", "ok: 2 announcers all hear each other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AssessMembership(tc.sts, 7947)
			if len(got) != len(tc.want) {
				t.Fatalf("findings %+v; want %q", got, tc.want)
			}
			for i, f := range got {
				if s := f.Severity.String() + ": " + f.Message; !strings.Contains(s, tc.want[i]) {
					t.Errorf("finding %d = %q; want %q", i, s, tc.want[i])
				}
				if f.Severity == Fail && !strings.Contains(f.Fix, "UDP port 7947") {
					t.Errorf("fix %q does not name the membership port", f.Fix)
				}
			}
		})
	}
}

// TestRenderJSONComplete: the JSON report holds every finding with its
// severity, area, message and fix, and the counts.
func TestRenderJSONComplete(t *testing.T) {
	var r Report
	r.add(OK, "proxmox lab", "", "reachable")
	r.add(Warn, MembershipArea, "open it", "n1: announcer status not readable")
	r.add(Fail, KubeProxyArea, "apply the patch", "IPVS without strictARP")
	var b bytes.Buffer
	if err := RenderJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Findings []struct{ Severity, Area, Message, Fix string }
		Fails    int
		Warnings int
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if len(got.Findings) != 3 || got.Fails != 1 || got.Warnings != 1 {
		t.Fatalf("%s", b.String())
	}
	for i, f := range r.Findings {
		g := got.Findings[i]
		if g.Severity != strings.ToLower(f.Severity.String()) || g.Area != f.Area || g.Message != f.Message || g.Fix != f.Fix {
			t.Errorf("finding %d = %+v; want %+v", i, g, f)
		}
	}
}

func TestParseAndAssessBGP(t *testing.T) {
	const metrics = `# HELP pvelb_announcer_bgp_session_up 1 when the BGP session to the peer is established, else 0.
# TYPE pvelb_announcer_bgp_session_up gauge
pvelb_announcer_bgp_session_up{address="198.51.100.1",peer="router"} 1
pvelb_announcer_bgp_session_up{address="2001:db8::1",peer="router6"} 0
pvelb_announcer_bgp_session_state{address="198.51.100.1",peer="router",state="established"} 1
`
	got := ParseBGPSessions(metrics)
	want := []BGPSession{{Peer: "router", Address: "198.51.100.1", Up: true}, {Peer: "router6", Address: "2001:db8::1"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ParseBGPSessions = %+v; want %+v", got, want)
	}
	f := AssessBGP([]AnnouncerStatus{{Node: "n1", Sessions: got}, {Node: "n2", Sessions: want[:1]}})
	if len(f) != 1 || f[0].Severity != Fail || !strings.Contains(f[0].Message, "n1: session to BGPPeer router6 (2001:db8::1) is not established") {
		t.Fatalf("findings %+v", f)
	}
	f = AssessBGP([]AnnouncerStatus{{Node: "n2", Sessions: want[:1]}})
	if len(f) != 1 || f[0].Severity != OK || f[0].Message != "1 BGP session(s) established" {
		t.Fatalf("healthy: %+v", f)
	}
	if f := AssessBGP([]AnnouncerStatus{{Node: "n1"}}); len(f) != 0 {
		t.Fatalf("no BGP at all: %+v; want nothing said", f)
	}
}

func TestAssessForeignClaims(t *testing.T) {
	now := time.Unix(2000, 0)
	claim := func(mac string) ForeignClaim {
		return ForeignClaim{IP: "192.0.2.200", MAC: mac, Interface: "eth0", Count: 3, Last: now.Add(-5 * time.Second)}
	}
	n1 := AnnouncerStatus{Node: "n1", MACs: []string{"02:00:00:00:00:01"}}
	n2 := AnnouncerStatus{Node: "n2", MACs: []string{"02:00:00:00:00:02"}, Claims: []ForeignClaim{claim("02:00:00:00:00:01")}}
	if f := AssessForeignClaims([]AnnouncerStatus{n1, n2}, now); len(f) != 1 || f[0].Severity != OK {
		t.Fatalf("a handover claim by another announcer: %+v; want OK", f)
	}
	n2.Claims = append(n2.Claims, claim("02:aa:bb:cc:dd:ee"))
	f := AssessForeignClaims([]AnnouncerStatus{n1, n2}, now)
	if len(f) != 1 || f[0].Severity != Fail ||
		f[0].Message != "VIP 192.0.2.200 is claimed by MAC 02:aa:bb:cc:dd:ee, which is no announcer's: seen 3 time(s) by n2 on eth0, last 5s ago; clients may follow it" {
		t.Fatalf("foreign MAC: %+v", f)
	}
	f = AssessForeignClaims([]AnnouncerStatus{n2, {Node: "n3", Err: fmt.Errorf("refused")}}, now)
	if len(f) != 2 || f[0].Severity != Warn || f[1].Severity != Warn {
		t.Fatalf("with an unreadable announcer, unknown MACs may be its: %+v; want warnings", f)
	}
}
