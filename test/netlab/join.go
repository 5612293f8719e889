package netlab

import (
	"fmt"
	"net"
	"testing"
)

// AddNode adds one more node namespace (node<N+1> at .<11+N>) to a running
// lab, as a VM joining the cluster, with kube-proxy's strictARP emulation
// when strictARP is set. It is torn down with the lab.
func (l *Lab) AddNode(t testing.TB, strictARP bool) *Host {
	t.Helper()
	i := len(l.Nodes) + 1
	if i > 50 {
		t.Fatalf("netlab: at most 50 nodes")
	}
	h, err := l.addHost(fmt.Sprintf("node%d", i), 10+i)
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	if strictARP {
		if err := h.emulateStrictARP(); err != nil {
			t.Fatalf("netlab: %v", err)
		}
	}
	l.mu.Lock()
	l.Nodes = append(l.Nodes, h)
	l.mu.Unlock()
	return h
}

// AddLink gives the host a second interface on the lab bridge, without
// addresses (an announcer answers ARP/NDP on it by raw socket), with MAC
// 02:00:5e:01:00:<octet>; for pools that name an interface only some nodes
// have.
func (h *Host) AddLink(t testing.TB, name string) net.HardwareAddr {
	t.Helper()
	mac := net.HardwareAddr{0x02, 0x00, 0x5e, 0x01, 0x00, h.IPv4.Addr().As4()[3]}
	port := h.port + "b"
	if len(port) > 15 || len(name) > 15 {
		t.Fatalf("netlab: interface names %q/%q too long", name, port)
	}
	if err := run("ip", "-n", h.Netns, "link", "add", name, "address", mac.String(),
		"type", "veth", "peer", "name", port, "netns", h.lab.Switch); err != nil {
		t.Fatalf("netlab: %v", err)
	}
	if err := batch(h.lab.Switch, "link set "+port+" master "+BridgeName, "link set "+port+" up"); err != nil {
		t.Fatalf("netlab: %v", err)
	}
	if err := batch(h.Netns, "link set "+name+" up"); err != nil {
		t.Fatalf("netlab: %v", err)
	}
	return mac
}

// SetLink sets one of the host's interfaces up or down (inside the host: it
// loses its carrier as a VM whose NIC is unplugged would).
func (h *Host) SetLink(name string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return batch(h.Netns, "link set "+name+" "+state)
}
