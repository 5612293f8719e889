package instances

import (
	"fmt"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	cloudproviderapi "k8s.io/cloud-provider/api"
	netutils "k8s.io/utils/net"

	"github.com/pvelb/pvelb/provider/pve"
)

// virtualIfacePrefixes name interfaces whose addresses are not the node's own:
// loopback, CNI and overlay devices, container veths, kube-proxy's IPVS dummy
// (which holds every Service IP, pvelb's VIPs included) and dummies.
var virtualIfacePrefixes = []string{
	"lo", "cilium", "flannel", "cni", "veth", "lxc", "kube-ipvs", "docker",
	"vxlan", "tunl", "cali", "dummy",
}

func isVirtualIface(name string) bool {
	for _, p := range virtualIfacePrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// ProvidedNodeIPs parses the kubelet's alpha.kubernetes.io/provided-node-ip
// annotation (one IP or a comma-separated dual-stack pair). ok is false when
// the annotation is absent. Parsing is as lenient as the cloud node
// controller's (leading zeros allowed) so that every IP it will look for is
// found in what pvelb returns.
func ProvidedNodeIPs(node *v1.Node) (ips []netip.Addr, ok bool, err error) {
	raw, ok := node.Annotations[cloudproviderapi.AnnotationAlphaProvidedIPAddr]
	if !ok {
		return nil, false, nil
	}
	for part := range strings.SplitSeq(raw, ",") {
		part = strings.TrimSpace(part)
		ip := netutils.ParseIPSloppy(part)
		if ip == nil {
			return nil, true, fmt.Errorf("node %s: annotation %s=%q: %q is not an IP address",
				node.Name, cloudproviderapi.AnnotationAlphaProvidedIPAddr, raw, part)
		}
		addr, _ := netip.AddrFromSlice(ip)
		ips = append(ips, addr.Unmap())
	}
	return ips, true, nil
}

// AgentAddresses picks the guest agent's addresses that can reach the node:
// global unicast addresses on real interfaces, in the agent's order.
func AgentAddresses(ifaces []pve.AgentInterface) []netip.Addr {
	var out []netip.Addr
	for _, ifc := range ifaces {
		if isVirtualIface(ifc.Name) {
			continue
		}
		for _, p := range ifc.Prefixes {
			a := p.Addr().Unmap()
			if !a.IsValid() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
				a.IsMulticast() || a.IsUnspecified() || a.IsInterfaceLocalMulticast() {
				continue
			}
			out = append(out, a)
		}
	}
	return out
}

// NodeAddresses builds the addresses reported for a Node:
//
//   - the kubelet's provided node IPs first, always, as InternalIP: the cloud
//     node controller refuses to initialise a Node whose provided IP is not
//     among the cloud's addresses;
//   - without that annotation, the InternalIP/ExternalIP addresses already on
//     the Node (set by the kubelet), so an update never wipes them;
//   - then the agent's addresses (nil unless instances.addresses is
//     provided-and-agent) as InternalIP. Note the cloud node controller keeps
//     only the provided IPs of a type they match, so agent addresses show up
//     mainly on Nodes whose kubelet runs without --node-ip;
//   - finally the Hostname (the node name).
//
// Duplicates are dropped, first occurrence wins.
func NodeAddresses(node *v1.Node, provided []netip.Addr, haveProvided bool, agent []netip.Addr) []v1.NodeAddress {
	var out []v1.NodeAddress
	seen := map[string]bool{}
	add := func(t v1.NodeAddressType, addr string) {
		key := string(t) + "/" + addr
		if addr == "" || seen[key] {
			return
		}
		seen[key] = true
		out = append(out, v1.NodeAddress{Type: t, Address: addr})
	}
	for _, a := range provided {
		add(v1.NodeInternalIP, a.String())
	}
	if !haveProvided {
		for _, a := range node.Status.Addresses {
			if a.Type == v1.NodeInternalIP || a.Type == v1.NodeExternalIP {
				add(a.Type, a.Address)
			}
		}
	}
	for _, a := range agent {
		add(v1.NodeInternalIP, a.String())
	}
	add(v1.NodeHostName, node.Name)
	return out
}
