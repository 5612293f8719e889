package announcer

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

// What this node can serve: the interfaces its pools name, checked between
// reconciles so a link going down moves its VIPs within a second.

// unservable lists what this node cannot answer ARP/NDP for, as the tokens
// Plan's CanServe takes: the ARP-mode pools naming an interface it lacks or
// has down, those without interfaces when its default interface is unusable,
// and "" (addresses outside every pool) in that case too. The membership
// carries the list to every peer, so no node elects this one for them.
func (c *Controller) unservable(nodes []*v1.Node, pools map[string]*v1alpha1.IPPool) []string {
	_, defErr := c.defaultInterface(nodes)
	var out []string
	if defErr != nil {
		out = append(out, "")
	}
	for name, p := range pools {
		if p.Spec.Announce.Mode == v1alpha1.AnnounceBGP {
			continue
		}
		ifaces := p.Spec.Announce.Interfaces
		if len(ifaces) == 0 {
			if defErr != nil {
				out = append(out, name)
			}
			continue
		}
		for _, i := range ifaces {
			if err := c.usable(i); err != nil {
				out = append(out, name)
				break
			}
		}
	}
	slices.Sort(out)
	if !slices.Equal(out, c.lastUnservable) {
		c.statusMu.Lock()
		c.lastUnservable = out
		c.statusMu.Unlock()
		if len(out) > 0 {
			klog.InfoS("This node cannot answer for some pools; it leaves their elections", "pools", out, "defaultInterface", defErr)
		} else {
			klog.InfoS("This node can answer for every pool again")
		}
	}
	return out
}

// usable: usableLink, and this node's responders could be opened on it.
func (c *Controller) usable(name string) error {
	if err := c.openFailed[name]; err != nil {
		return err
	}
	return usableLink(name)
}

// usableLink: the interface exists, is up with a carrier, and has an
// Ethernet address to answer with.
func usableLink(name string) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagRunning == 0 {
		return fmt.Errorf("interface %s is down", name)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("interface %s has no Ethernet address", name)
	}
	return nil
}

// checkLinks re-evaluates what this node can serve between reconciles, so an
// interface going down moves its VIPs within a second; the membership
// signals a change, which reconciles.
func (c *Controller) checkLinks() {
	// On Run's goroutine, like reconcile: lastUnservable and openFailed
	// need no lock.
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	for ifname := range c.openFailed {
		if r, err := openL2(ifname, func() bool { return false }, nil, nil, nil); err == nil {
			r.close()
			delete(c.openFailed, ifname)
			klog.InfoS("ARP/NDP responder can be opened again", "interface", ifname)
		}
	}
	c.cfg.Membership.SetUnservable(c.unservable(nodes, c.listPools()))
}

// defaultInterface is --interface, else the interface holding this node's
// InternalIP; either must be usable.
func (c *Controller) defaultInterface(nodes []*v1.Node) (string, error) {
	if c.cfg.Interface != "" {
		return c.cfg.Interface, c.usable(c.cfg.Interface)
	}
	var self *v1.Node
	for _, n := range nodes {
		if n.Name == c.cfg.Node {
			self = n
		}
	}
	if self == nil {
		return "", fmt.Errorf("node %s not found in the API", c.cfg.Node)
	}
	ip, ok := internalIP(self)
	if !ok {
		return "", fmt.Errorf("node %s has no InternalIP", c.cfg.Node)
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, ifi := range ifaces {
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == ip {
				return ifi.Name, c.usable(ifi.Name)
			}
		}
	}
	return "", fmt.Errorf("no interface holds node %s's InternalIP %s", c.cfg.Node, ip)
}
