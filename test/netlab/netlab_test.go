package netlab

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestShortRole(t *testing.T) {
	for in, want := range map[string]string{"node1": "n1", "node12": "n12", "client": "client", "router": "router", "nodeX": "nodeX", "controlplane": "controlp"} {
		if got := shortRole(in); got != want {
			t.Errorf("shortRole(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLabConnectivity(t *testing.T) {
	RequireTools(t, "ping")
	lab := New(t, Options{Nodes: 2})
	ctx := context.Background()
	if len(lab.Nodes) != 2 || lab.Client == nil {
		t.Fatalf("lab has %d nodes, client %v", len(lab.Nodes), lab.Client)
	}
	for _, n := range lab.Nodes {
		if err := lab.Client.Ping(ctx, n.IPv4.Addr(), time.Second); err != nil {
			t.Errorf("client -> %s IPv4: %v", n.Name, err)
		}
		if err := lab.Client.Ping(ctx, n.IPv6.Addr(), 2*time.Second); err != nil {
			t.Errorf("client -> %s IPv6: %v", n.Name, err)
		}
		nb, err := lab.Client.Neigh(ctx, n.IPv4.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if nb.MAC.String() != n.MAC.String() {
			t.Errorf("client's neighbour entry for %s = %v, want %s", n.Name, nb.MAC, n.MAC)
		}
	}
	// The Go probers see the kernel's own answers for a node's address.
	n := lab.Nodes[1]
	if macs, err := lab.Client.Arping(ctx, n.IPv4.Addr(), 2, 100*time.Millisecond); err != nil || len(macs) != 1 || macs[0].String() != n.MAC.String() {
		t.Errorf("Arping %s = %v, %v; want [%s]", n.IPv4.Addr(), macs, err, n.MAC)
	}
	if macs, err := lab.Client.Solicit(ctx, n.IPv6.Addr(), 2, 100*time.Millisecond); err != nil || len(macs) != 1 || macs[0].String() != n.MAC.String() {
		t.Errorf("Solicit %s = %v, %v; want [%s]", n.IPv6.Addr(), macs, err, n.MAC)
	}
	if macs, err := lab.Client.Probe(ctx, n.IPv6.Addr(), n.MAC, 2, 100*time.Millisecond); err != nil || len(macs) != 1 || macs[0].String() != n.MAC.String() {
		t.Errorf("Probe %s at %s = %v, %v; want [%s]", n.IPv6.Addr(), n.MAC, macs, err, n.MAC)
	}
	// Nothing of the lab is visible in the host's namespace.
	if _, err := net.InterfaceByName(lab.Nodes[0].port); err == nil {
		t.Errorf("bridge port %s exists in the host namespace", lab.Nodes[0].port)
	}
}

func TestStrictARPEmulation(t *testing.T) {
	RequireTools(t, "ping")
	lab := New(t, Options{Nodes: 2, StrictARP: true})
	ctx := context.Background()
	vip := VIP4(0)
	for _, n := range lab.Nodes {
		if err := n.AddVIP(vip); err != nil {
			t.Fatal(err)
		}
	}
	macs, err := lab.Client.Arping(ctx, vip, 3, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(macs) != 0 {
		t.Fatalf("with strictARP nobody may answer ARP for a VIP on %s, got replies from %v", IPVSDummy, macs)
	}
	// Weakening node2 back to the kernel defaults makes it answer: the
	// emulation, not an accident of the lab, is what keeps the VIP silent.
	n2 := lab.Nodes[1]
	if err := n2.Sysctl("net.ipv4.conf.all.arp_ignore=0", "net.ipv4.conf.all.arp_announce=0",
		"net.ipv4.conf.eth0.arp_ignore=0", "net.ipv4.conf.eth0.arp_announce=0"); err != nil {
		t.Fatal(err)
	}
	macs, err = lab.Client.Arping(ctx, vip, 3, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(macs) != 1 || macs[0].String() != n2.MAC.String() {
		t.Fatalf("after relaxing node2's arp_ignore, replies from %v, want only node2 %s", macs, n2.MAC)
	}
	if err := lab.Client.Ping(ctx, vip, time.Second); err != nil {
		t.Fatalf("ping to VIP answered by node2: %v", err)
	}
	if err := n2.DelVIP(vip); err != nil {
		t.Fatal(err)
	}
}

func TestCutAndRestoreLink(t *testing.T) {
	RequireTools(t, "ping")
	lab := New(t, Options{Nodes: 1})
	ctx := context.Background()
	n := lab.Nodes[0]
	if err := lab.Client.Ping(ctx, n.IPv4.Addr(), time.Second); err != nil {
		t.Fatalf("before cut: %v", err)
	}
	if err := n.CutLink(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Client.Ping(ctx, n.IPv4.Addr(), time.Second); err == nil {
		t.Fatal("ping passed through a cut link")
	}
	// The node still sees its own link up: a partition, not a local link-down.
	out, err := n.Run(ctx, "ip", "-br", "link", "show", n.Link)
	if err != nil {
		t.Fatal(err)
	}
	if want := "UP"; !containsWord(out, want) {
		t.Errorf("node's link after cut: %q, want state %s", out, want)
	}
	if err := n.RestoreLink(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Client.Ping(ctx, n.IPv4.Addr(), 2*time.Second); err != nil {
		t.Fatalf("after restore: %v", err)
	}
}

func containsWord(s, w string) bool {
	return slices.Contains(strings.Fields(s), w)
}

func TestSocketsFromTheHostProcess(t *testing.T) {
	lab := New(t, Options{Nodes: 1})
	n := lab.Nodes[0]
	var ln net.Listener
	if err := InNetns(n.Netns, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(n.IPv4.Addr().String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte("hello from " + n.Name))
			_ = c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := lab.Client.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial from client namespace to %s: %v", ln.Addr(), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	k, _ := c.Read(b)
	if got := string(b[:k]); got != "hello from node1" {
		t.Fatalf("read %q", got)
	}
	if local := c.LocalAddr().(*net.TCPAddr).IP.String(); local != lab.Client.IPv4.Addr().String() {
		t.Errorf("connection's local address %s, want the client's %s", local, lab.Client.IPv4.Addr())
	}
	// The host namespace has no route to the lab: the same dial from the host fails.
	var d net.Dialer
	hctx, hcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer hcancel()
	if hc, err := d.DialContext(hctx, "tcp", ln.Addr().String()); err == nil {
		hc.Close()
		t.Skip("host namespace reaches 192.0.2.0/24 on its own; cannot show isolation here")
	}
}

func TestCleanupAndSweep(t *testing.T) {
	RequirePrivileged(t)
	var names []string
	t.Run("lab", func(t *testing.T) {
		lab := New(t, Options{Nodes: 1})
		names = []string{lab.Switch, lab.Nodes[0].Netns, lab.Client.Netns}
		// A process left running in a namespace must not keep it alive.
		cmd := lab.Nodes[0].Command(context.Background(), "sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = cmd.Wait() }()
		for _, n := range names {
			if _, err := os.Stat(netnsDir + "/" + n); err != nil {
				t.Fatalf("namespace %s missing: %v", n, err)
			}
		}
	})
	for _, n := range names {
		if _, err := os.Stat(netnsDir + "/" + n); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists after the test's cleanup (%v)", n, err)
		}
	}

	// A namespace of a dead test process is swept; one of a live process is not.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadNS := fmt.Sprintf("%s%d-9-sw", Prefix, dead.Process.Pid)
	liveNS := fmt.Sprintf("%s%d-999-sw", Prefix, os.Getpid())
	for _, n := range []string{deadNS, liveNS} {
		if err := run("ip", "netns", "add", n); err != nil {
			t.Fatal(err)
		}
		n := n
		t.Cleanup(func() { _ = deleteNetns(n) })
	}
	if err := Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(netnsDir + "/" + deadNS); !os.IsNotExist(err) {
		t.Errorf("Sweep left %s of dead pid %d", deadNS, dead.Process.Pid)
	}
	if _, err := os.Stat(netnsDir + "/" + liveNS); err != nil {
		t.Errorf("Sweep removed %s of the running test process: %v", liveNS, err)
	}
}
