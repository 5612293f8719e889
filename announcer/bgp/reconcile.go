package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
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

// Reconcile makes the speaker's sessions and routes match d. It never stops
// at the first problem: every valid peer and route is applied and the
// problems are returned together, each naming the BGPPeer or address and the
// field. A BGPPeer whose new spec is invalid keeps its running session.
func (s *Speaker) Reconcile(ctx context.Context, d Desired) error {
	var errs []error
	peers := make([]Peer, 0, len(d.Peers))
	for _, in := range d.Peers {
		p, err := PeerFromSpec(in)
		if err != nil {
			errs = append(errs, err)
			if old, ok := s.runningPeerNamed(in.Name); ok {
				peers = append(peers, old)
			}
			continue
		}
		peers = append(peers, p)
	}
	if err := s.SetPeers(ctx, peers); err != nil {
		errs = append(errs, err)
	}
	routes := make([]Route, 0, len(d.VIPs))
	for _, v := range d.VIPs {
		routes = append(routes, v.Route())
	}
	if err := s.SetRoutes(ctx, routes); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Speaker) runningPeerNamed(name string) (Peer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.peers {
		if p.Name == name {
			return p, true
		}
	}
	return Peer{}, false
}

// Route is the host route advertising v.
func (v VIP) Route() Route {
	ip := v.IP.Unmap()
	return Route{Prefix: netip.PrefixFrom(ip, ip.BitLen()), Communities: v.Communities, LocalPreference: v.LocalPreference}
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

// PeerFromSpec converts a BGPPeer into a Peer. The apiserver has validated
// the spec already (CEL rules); this repeats the checks that matter to the
// speaker so a spec that bypassed validation still gets a clear error.
func PeerFromSpec(in PeerInput) (Peer, error) {
	fail := func(field, format string, args ...any) (Peer, error) {
		return Peer{}, fmt.Errorf("BGPPeer %s: spec.%s: %s", in.Name, field, fmt.Sprintf(format, args...))
	}
	sp := in.Spec
	addr, err := netip.ParseAddr(sp.PeerAddress)
	if err != nil {
		return fail("peerAddress", "%q is not an IP address", sp.PeerAddress)
	}
	p := Peer{
		Name:     in.Name,
		Address:  addr.Unmap(),
		ASN:      sp.PeerASN,
		LocalASN: sp.MyASN,
		Password: Secret(in.Password),
		HoldTime: sp.HoldTime.Duration,
	}
	if sp.MyASN == 0 {
		return fail("myASN", "must be 1-4294967295")
	}
	if sp.PeerPort < 0 || sp.PeerPort > 65535 {
		return fail("peerPort", "must be 1-65535, got %d", sp.PeerPort)
	}
	p.Port = uint16(sp.PeerPort)
	if p.HoldTime == 0 {
		// The apiserver defaults an omitted holdTime to 90s, so 0 here is an
		// explicit "0s" (no keepalives), which gobgp cannot do.
		return fail("holdTime", "0s (no keepalives) is not supported by the embedded speaker; use at least 3s")
	}
	if sp.KeepaliveTime != nil {
		p.KeepaliveTime = sp.KeepaliveTime.Duration
	}
	if sp.EBGPMultiHop != nil {
		if *sp.EBGPMultiHop < 2 || *sp.EBGPMultiHop > 255 {
			return fail("ebgpMultiHop", "must be 2-255, got %d", *sp.EBGPMultiHop)
		}
		p.EBGPMultihopTTL = uint8(*sp.EBGPMultiHop)
	}
	if sp.SourceAddress != "" {
		src, err := netip.ParseAddr(sp.SourceAddress)
		if err != nil {
			return fail("sourceAddress", "%q is not an IP address", sp.SourceAddress)
		}
		p.SourceAddress = src.Unmap()
	}
	if gr := sp.GracefulRestart; gr != nil && gr.Enabled {
		p.GracefulRestart = true
		p.RestartTime = DefaultRestartTime
		if gr.RestartTime != nil {
			p.RestartTime = gr.RestartTime.Duration
		}
	}
	if sp.PasswordSecretRef == nil && in.Password != "" {
		return fail("passwordSecretRef", "a password was given but the spec names no Secret")
	}
	// Validate against a config that only supplies defaults: every field of
	// a BGPPeer is explicit, so the speaker's own ASN never fills in.
	n := p.normalize(Config{LocalASN: p.LocalASN})
	if err := n.validate(); err != nil {
		return Peer{}, fmt.Errorf("BGPPeer %s: %w", in.Name, err)
	}
	return p, nil
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
