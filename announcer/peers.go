package announcer

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"

	"github.com/pvelb/pvelb/announcer/membership"
)

// peers maps every other node to its heartbeat address (InternalIP:port,
// preferring IPv4) and whether it counts towards the quorum.
func (c *Controller) peers(nodes []*v1.Node) map[string]membership.Peer {
	out := map[string]membership.Peer{}
	for _, n := range nodes {
		if n.Name == c.cfg.Node {
			continue
		}
		if ip, ok := internalIP(n); ok {
			out[n.Name] = membership.Peer{Addr: netip.AddrPortFrom(ip, uint16(c.cfg.MembershipPort)), Voter: !notReady(n)}
		}
	}
	return out
}

// notReady: the API reports the Node's kubelet silent (Ready False or
// Unknown). A Node without a Ready condition has not reported yet and
// still counts, which keeps the quorum strict.
func notReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status != v1.ConditionTrue
		}
	}
	return false
}

func internalIP(n *v1.Node) (netip.Addr, bool) {
	var v6 netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		if ip.Unmap().Is4() {
			return ip.Unmap(), true
		}
		if !v6.IsValid() {
			v6 = ip
		}
	}
	return v6, v6.IsValid()
}
