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
	doctor := l.runDoctor(t)
	var out string
	Eventually(t, 30*time.Second, "doctor: all announcers hear each other", func(ctx context.Context) error {
		out = doctor(ctx)
		if !strings.Contains(out, "3 announcers all hear each other") {
			return errorf("doctor says:\n%s", out)
		}
		return nil
	})

	deaf := l.net.Nodes[1]
	if err := deaf.DropUDP(annMembershipPort, netlab.In); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deaf.Heal() })
	Eventually(t, 20*time.Second, "doctor names "+deaf.Name+" as not hearing the others", func(ctx context.Context) error {
		out = doctor(ctx)
		for _, other := range []*netlab.Host{l.net.Nodes[0], l.net.Nodes[2]} {
			if !strings.Contains(out, deaf.Name+" does not hear "+other.Name+" ("+other.Name+" hears "+deaf.Name+")") {
				return errorf("doctor says:\n%s", out)
			}
		}
		if !strings.Contains(out, "let UDP port 7947 pass from") {
			return errorf("no fix naming the port:\n%s", out)
		}
		return nil
	})
	t.Logf("doctor:\n%s", out)
}

// runDoctor runs pvelbctl doctor in the lab's client namespace (a machine on
// the node network) with a cloud config whose Proxmox is not part of the lab
// (its checks fail fast on a closed port; the others run regardless).
func (l *annLab) runDoctor(t *testing.T) func(ctx context.Context) string {
	t.Helper()
	ctl := Binary(t, "pvelbctl")
	cfg := filepath.Join(t.TempDir(), "cloud.yaml")
	if err := os.WriteFile(cfg, []byte("clusters:\n  - region: lab\n    url: https://127.0.0.1:1/api2/json\n    tokenID: pvelb@pve!ccm\n    tokenSecret: x\n    timeout: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context) string {
		out, _ := l.net.Client.Command(ctx, ctl, "doctor", "--kubeconfig="+l.cp.Kubeconfig, "--cloud-config="+cfg).CombinedOutput()
		return string(out)
	}
}

// TestDoctorNamesBGPSessionsDown: with BGP-mode announcers and a BIRD
// router, doctor reports every session established, then names the node
// whose session the router dropped.
func TestDoctorNamesBGPSessionsDown(t *testing.T) {
	l := newBGPLab(t)
	l.startAll(t)
	doctor := l.runDoctor(t)
	var out string
	Eventually(t, 40*time.Second, "doctor: 3 BGP sessions established", func(ctx context.Context) error {
		out = doctor(ctx)
		if !strings.Contains(out, "3 BGP session(s) established") {
			return errorf("doctor says:\n%s", out)
		}
		return nil
	})
	n2 := l.net.Nodes[1]
	if _, err := l.bird.Birdc("disable", "n2"); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "doctor names "+n2.Name+"'s session", func(ctx context.Context) error {
		out = doctor(ctx)
		want := n2.Name + ": session to BGPPeer router (" + l.router.IPv4.Addr().String() + ") is not established"
		if !strings.Contains(out, want) || strings.Count(out, "is not established") != 1 {
			return errorf("want exactly %q; doctor says:\n%s", want, out)
		}
		return nil
	})
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
	doctor := l.runDoctor(t)
	var out string
	Eventually(t, 20*time.Second, "doctor: no other responder", func(ctx context.Context) error {
		out = doctor(ctx)
		if !strings.Contains(out, "no other responder claimed a VIP") {
			return errorf("doctor says:\n%s", out)
		}
		return nil
	})

	c := l.net.Client
	ctx := context.Background()
	if _, err := c.Run(ctx, "ip", "addr", "add", vip.String()+"/32", "dev", c.Link); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(ctx, "arping", "-U", "-c", "3", "-w", "3", "-I", c.Link, "-s", vip.String(), vip.String()); err != nil {
		t.Logf("arping: %v", err) // arping -U exits 1 when nobody replies, which is expected
	}
	want := "VIP " + vip.String() + " is claimed by MAC " + c.MAC.String() + ", which is no announcer's"
	Eventually(t, 20*time.Second, "doctor names the client's MAC", func(ctx context.Context) error {
		out = doctor(ctx)
		if !strings.Contains(out, want) || !strings.Contains(out, "by "+owner.Name+" on ") {
			return errorf("want %q seen by %s; doctor says:\n%s", want, owner.Name, out)
		}
		return nil
	})
	t.Logf("doctor:\n%s", out)
}
