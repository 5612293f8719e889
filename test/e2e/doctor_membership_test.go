package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvelb/pvelb/test/netlab"
)

// annMembershipPort is the announcers' default --membership-port, which
// newAnnLab's announcers use.
const annMembershipPort = 7947

// TestDoctorNamesNodesThatDoNotHearEachOther runs the real pvelbctl doctor
// from the client namespace (a machine on the node network) against real
// announcers: it reports that all hear each other, then, with one node's
// heartbeats dropped on the way in, names that node as not hearing each of
// the others, with the port to open.
func TestDoctorNamesNodesThatDoNotHearEachOther(t *testing.T) {
	netlab.RequireTools(t, "nft")
	l := newAnnLab(t)
	for _, n := range l.net.Nodes {
		l.start(t, n, l.secret)
	}
	says := l.doctorSays(t)
	says(30*time.Second, "all announcers hear each other", "3 announcers all hear each other")

	deaf := l.net.Nodes[1]
	if err := deaf.DropUDP(annMembershipPort, netlab.In); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deaf.Heal() })
	var wants []string
	for _, other := range []*netlab.Host{l.net.Nodes[0], l.net.Nodes[2]} {
		wants = append(wants, deaf.Name+" does not hear "+other.Name+" ("+other.Name+" hears "+deaf.Name+")")
	}
	out := says(20*time.Second, deaf.Name+" named as not hearing the others", append(wants, "let UDP port 7947 pass from")...)
	t.Logf("doctor:\n%s", out)
}

// doctorSays runs pvelbctl doctor in the lab's client namespace (a machine
// on the node network) with a cloud config whose Proxmox is not part of the
// lab (its checks fail fast on a closed port; the others run regardless).
// The function it returns runs doctor until its report holds every want,
// and returns that report.
func (l *annLab) doctorSays(t *testing.T) func(timeout time.Duration, what string, wants ...string) string {
	t.Helper()
	ctl := Binary(t, "pvelbctl")
	cfg := filepath.Join(t.TempDir(), "cloud.yaml")
	if err := os.WriteFile(cfg, []byte("clusters:\n  - region: lab\n    url: https://127.0.0.1:1/api2/json\n    tokenID: pvelb@pve!ccm\n    tokenSecret: x\n    timeout: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(timeout time.Duration, what string, wants ...string) string {
		t.Helper()
		var out string
		Eventually(t, timeout, "doctor: "+what, func(ctx context.Context) error {
			b, _ := l.net.Client.Command(ctx, ctl, "doctor", "--kubeconfig="+l.cp.Kubeconfig, "--cloud-config="+cfg).CombinedOutput()
			out = string(b)
			for _, w := range wants {
				if !strings.Contains(out, w) {
					return errorf("no %q; doctor says:\n%s", w, out)
				}
			}
			return nil
		})
		return out
	}
}

// TestDoctorNamesBGPSessionsDown: with BGP-mode announcers and a BIRD
// router, doctor reports every session established, then names the node
// whose session the router dropped.
func TestDoctorNamesBGPSessionsDown(t *testing.T) {
	l := newBGPLab(t)
	l.startAll(t)
	says := l.doctorSays(t)
	says(40*time.Second, "3 BGP sessions established", "3 BGP session(s) established")
	n2 := l.net.Nodes[1]
	if _, err := l.bird.Birdc("disable", "n2"); err != nil {
		t.Fatal(err)
	}
	out := says(30*time.Second, n2.Name+"'s session named",
		n2.Name+": session to BGPPeer router ("+l.router.IPv4.Addr().String()+") is not established")
	if n := strings.Count(out, "is not established"); n != 1 {
		t.Errorf("%d sessions named, want only %s's:\n%s", n, n2.Name, out)
	}
	t.Logf("doctor:\n%s", out)
}

// TestDoctorNamesAForeignResponder: a host on the node network that takes
// a pvelb VIP (the address on its interface, gratuitous ARP) is named by
// doctor with its MAC, from what the answering announcer saw; before, the
// VIP's only responders are announcers.
func TestDoctorNamesAForeignResponder(t *testing.T) {
	netlab.RequireTools(t, "arping")
	l := newAnnLab(t)
	for _, n := range l.net.Nodes {
		l.start(t, n, l.secret)
	}
	vip := netlab.VIP4(3)
	l.service(t, "web", false, vip)
	owner := l.answering(t, vip, 30*time.Second)
	says := l.doctorSays(t)
	says(20*time.Second, "no other responder", "no other responder claimed a VIP")

	c := l.net.Client
	ctx := context.Background()
	if _, err := c.Run(ctx, "ip", "addr", "add", vip.String()+"/32", "dev", c.Link); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(ctx, "arping", "-U", "-c", "3", "-w", "3", "-I", c.Link, "-s", vip.String(), vip.String()); err != nil {
		t.Logf("arping: %v", err) // arping -U exits 1 when nobody replies, which is expected
	}
	out := says(20*time.Second, "the client's MAC named",
		"VIP "+vip.String()+" is claimed by MAC "+c.MAC.String()+", which is no announcer's", "by "+owner.Name+" on ")
	t.Logf("doctor:\n%s", out)
}
