package netlab

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// udpDelivered reports whether a datagram from one socket reaches another:
// it waits up to wait for it (a drop can only be shown by waiting).
func udpDelivered(t *testing.T, from, to net.PacketConn, dst netip.AddrPort, wait time.Duration) bool {
	t.Helper()
	msg := fmt.Sprintf("%s>%s %d", from.LocalAddr(), dst, time.Now().UnixNano())
	if _, err := from.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(dst)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	deadline := time.Now().Add(wait)
	for {
		_ = to.SetReadDeadline(deadline)
		n, _, err := to.ReadFrom(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == msg { // not a late one from an earlier check
			return true
		}
	}
}

func TestDropUDP(t *testing.T) {
	RequireTools(t, "nft")
	lab := New(t, Options{Nodes: 2})
	n1, n2 := lab.Nodes[0], lab.Nodes[1]
	const port, otherPort = 7946, 7947
	// Both ends bound to the port, as announcers that heartbeat each other.
	listen := func(h *Host, port int) net.PacketConn {
		c, err := h.ListenPacket("udp", ":"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	c1, c2, other1 := listen(n1, port), listen(n2, port), listen(n1, otherPort)

	type flows struct{ in, out, otherIn bool } // into node1:port, out of node1 to :port, into node1:otherPort
	check := func(name string, want flows) {
		t.Helper()
		for _, fam := range []struct {
			name   string
			n1, n2 netip.Addr
		}{{"IPv4", n1.IPv4.Addr(), n2.IPv4.Addr()}, {"IPv6", n1.IPv6.Addr(), n2.IPv6.Addr()}} {
			// A passing datagram arrives at once; a dropped one is given
			// 300ms, plenty on a lab link.
			wait := func(pass bool) time.Duration {
				if pass {
					return 5 * time.Second
				}
				return 300 * time.Millisecond
			}
			got := flows{
				in:      udpDelivered(t, c2, c1, netip.AddrPortFrom(fam.n1, port), wait(want.in)),
				out:     udpDelivered(t, c1, c2, netip.AddrPortFrom(fam.n2, port), wait(want.out)),
				otherIn: udpDelivered(t, c2, other1, netip.AddrPortFrom(fam.n1, otherPort), wait(want.otherIn)),
			}
			if got != want {
				t.Errorf("%s, %s: delivered %+v, want %+v", name, fam.name, got, want)
			}
		}
	}

	// Under Out, node1's sends must still succeed, as on a lossy wire:
	// udpDelivered fails the test on a send error.
	check("before", flows{true, true, true})
	for _, tt := range []struct {
		dir  Direction
		want flows
	}{
		{In, flows{in: false, out: true, otherIn: true}},
		{Out, flows{in: true, out: false, otherIn: true}},
		{Both, flows{in: false, out: false, otherIn: true}},
	} {
		if err := n1.DropUDP(port, tt.dir); err != nil {
			t.Fatal(err)
		}
		check("drop "+tt.dir.String(), tt.want)
		if err := n1.Heal(); err != nil {
			t.Fatal(err)
		}
		check("healed after "+tt.dir.String(), flows{true, true, true})
	}

	// In then Out adds up to Both; Heal is idempotent and leaves other
	// tables (kube-proxy's, say) alone.
	if _, err := n1.Run(t.Context(), "nft", "add", "table", "inet", "other"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []Direction{In, Out} {
		if err := n1.DropUDP(port, d); err != nil {
			t.Fatal(err)
		}
	}
	check("drop in, then out", flows{false, false, true})
	for range 2 {
		if err := n1.Heal(); err != nil {
			t.Fatal(err)
		}
	}
	check("healed twice", flows{true, true, true})
	if _, err := n1.Run(t.Context(), "nft", "list", "table", "inet", "other"); err != nil {
		t.Errorf("Heal removed a table it did not add: %v", err)
	}

	for _, bad := range []struct {
		port int
		dir  Direction
	}{{0, In}, {65536, Out}, {port, 0}, {port, 4}} {
		if err := n1.DropUDP(bad.port, bad.dir); err == nil {
			t.Errorf("DropUDP(%d, %v) accepted", bad.port, bad.dir)
		}
	}
}
