package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
)

// The desired state is computed by the announcer without this package (so
// ARP-only nodes never map gobgp); these aliases keep the speaker's API.
type (
	PeerInput = desired.PeerInput
	VIP       = desired.VIP
	Desired   = desired.Desired
)

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
		routes = append(routes, vipRoute(v))
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

// Route is the host route advertising v.
func vipRoute(v VIP) Route {
	ip := v.IP.Unmap()
	return Route{Prefix: netip.PrefixFrom(ip, ip.BitLen()), Communities: v.Communities, LocalPreference: v.LocalPreference}
}
