// Package desired is the BGP state pvelb-announcer wants on its node, and
// the pure functions that compute it from BGPPeers, IPPools and the Node:
// which peers select the node, where their passwords are, the VIPs with
// their pools' BGP settings, and a router ID. It links no BGP
// implementation, so the announcer can compute and hand this to its
// pvelb-bgp-speaker child without mapping gobgp itself.
package desired

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

const (
	// NoListen as the speaker's listen port opens sessions outbound only.
	NoListen = -1
	// DefaultConnectRetry is the pause between connection attempts and
	// after a session drops when none is configured.
	DefaultConnectRetry = 5 * time.Second
)

// PeerInput is a BGPPeer selected for this node, with the password its
// passwordSecretRef points at already read by the caller ("" when none).
type PeerInput struct {
	Name     string
	Spec     v1alpha1.BGPPeerSpec
	Password string
}

// VIP is an address this node is eligible to advertise, with the BGP
// settings of its IPPool (spec.announce.communities and localPreference).
type VIP struct {
	IP              netip.Addr
	Communities     []string
	LocalPreference *uint32
}

// Desired is the whole BGP state this node should have.
type Desired struct {
	Peers []PeerInput
	VIPs  []VIP
}

// VIPFromPool pairs an address with its pool's BGP settings.
func VIPFromPool(ip netip.Addr, pool *v1alpha1.IPPool) VIP {
	v := VIP{IP: ip}
	if pool != nil {
		v.Communities = pool.Spec.Announce.Communities
		v.LocalPreference = pool.Spec.Announce.LocalPreference
	}
	return v
}

// PasswordKey names the Secret key a BGPPeer's password is in (the CRD
// defaults the key to "password"); ok is false when the peer has none.
func PasswordKey(spec v1alpha1.BGPPeerSpec) (namespace, name, key string, ok bool) {
	ref := spec.PasswordSecretRef
	if ref == nil {
		return "", "", "", false
	}
	key = ref.Key
	if key == "" {
		key = "password"
	}
	return ref.Namespace, ref.Name, key, true
}

// SelectPeers returns the BGPPeers whose nodeSelector matches a node with
// these labels (an empty selector matches every node). A peer with an
// invalid selector is left out and reported.
func SelectPeers(peers []*v1alpha1.BGPPeer, nodeLabels map[string]string) ([]*v1alpha1.BGPPeer, error) {
	var out []*v1alpha1.BGPPeer
	var errs []error
	for _, p := range peers {
		if p.Spec.NodeSelector == nil {
			out = append(out, p)
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.NodeSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("BGPPeer %s: spec.nodeSelector: %w", p.Name, err))
			continue
		}
		if sel.Matches(labels.Set(nodeLabels)) {
			out = append(out, p)
		}
	}
	return out, errors.Join(errs...)
}

// RouterIDFor picks a BGP router ID for a node: its first IPv4 address, or
// for IPv6-only nodes a stable IPv4-shaped ID derived from the node name
// (router IDs need only be unique among a router's peers, not routable).
func RouterIDFor(nodeName string, addrs []netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() && !a.IsUnspecified() {
			return a
		}
	}
	// FNV-1a; avoid 0.0.0.0 which is not a valid router ID.
	h := uint32(2166136261)
	for i := 0; i < len(nodeName); i++ {
		h ^= uint32(nodeName[i])
		h *= 16777619
	}
	if h == 0 {
		h = 1
	}
	return netip.AddrFrom4([4]byte{byte(h >> 24), byte(h >> 16), byte(h >> 8), byte(h)})
}
