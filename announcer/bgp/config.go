package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
)

// Defaults the speaker applies to fields left zero.
const (
	DefaultPort          = 179
	DefaultHoldTime      = 90 * time.Second
	DefaultRestartTime   = 120 * time.Second
	DefaultConnectRetry  = desired.DefaultConnectRetry
	maxRestartTime       = 4095 * time.Second // 12-bit field of the capability
	maxHoldTime          = 65535 * time.Second
	minHoldTime          = 3 * time.Second // RFC 4271 4.2
	maxMD5PasswordLength = 80              // TCP_MD5SIG_MAXKEYLEN
	// NoListen as Config.ListenPort opens sessions outbound only.
	NoListen = desired.NoListen
)

// Secret is a password. It prints and marshals as "[redacted]" so that
// logging a Peer can never reveal it.
type Secret string

func (Secret) String() string                 { return "[redacted]" }
func (Secret) GoString() string               { return `"[redacted]"` }
func (Secret) MarshalJSON() ([]byte, error)   { return []byte(`"[redacted]"`), nil }
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Config is the speaker's global configuration, fixed for its lifetime.
type Config struct {
	// RouterID is the BGP identifier, an IPv4 address (also on IPv6-only
	// nodes; see desired.RouterIDFor).
	RouterID netip.Addr
	// LocalASN is the speaker's AS; a Peer may override it (BGPPeer.myASN).
	LocalASN uint32
	// ListenPort is the TCP port to accept sessions on: 0 means 179 and
	// NoListen (-1) means none, so the speaker opens sessions outbound only
	// and never competes with Cilium's or Talos's BGP for port 179.
	ListenPort int32
	// NextHopIPv4 and NextHopIPv6 are this node's addresses, the next hop
	// of routes of each family. Unset, each session's own local address is
	// used, which is right only for routes of the session's family; setting
	// the other family's next hop also enables that family on every session
	// (MP-BGP, e.g. /128 routes over an IPv4 session).
	NextHopIPv4, NextHopIPv6 netip.Addr
	// ConnectRetry is the pause between connection attempts and after a
	// session drops (default DefaultConnectRetry; gobgp's own default of
	// 120s would leave a route unadvertised for minutes after a router restart).
	ConnectRetry time.Duration
}

// Validate checks the configuration; errors name the field.
func (c Config) Validate() error {
	var errs []error
	if !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		errs = append(errs, fmt.Errorf("routerID: must be a non-zero IPv4 address, got %q", addrString(c.RouterID)))
	}
	if c.LocalASN == 0 {
		errs = append(errs, errors.New("localASN: must be 1-4294967295"))
	}
	if c.ListenPort < NoListen || c.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("listenPort: must be -1 (no listener), 0 (179) or 1-65535, got %d", c.ListenPort))
	}
	if c.NextHopIPv4.IsValid() && (!c.NextHopIPv4.Is4() || c.NextHopIPv4.IsUnspecified()) {
		errs = append(errs, fmt.Errorf("nextHopIPv4: must be an IPv4 address, got %s", c.NextHopIPv4))
	}
	if c.NextHopIPv6.IsValid() && (!c.NextHopIPv6.Is6() || c.NextHopIPv6.Is4In6() || c.NextHopIPv6.IsUnspecified()) {
		errs = append(errs, fmt.Errorf("nextHopIPv6: must be an IPv6 address, got %s", c.NextHopIPv6))
	}
	if c.ConnectRetry < 0 {
		errs = append(errs, fmt.Errorf("connectRetry: must not be negative, got %s", c.ConnectRetry))
	}
	return errors.Join(errs...)
}

func (c Config) listenPort() int32 {
	if c.ListenPort == 0 {
		return DefaultPort
	}
	return c.ListenPort
}

func (c Config) connectRetry() time.Duration {
	if c.ConnectRetry == 0 {
		return DefaultConnectRetry
	}
	return max(c.ConnectRetry, time.Second)
}

// Peer is one BGP neighbor. Zero fields take the documented defaults.
type Peer struct {
	// Name identifies the peer in logs, errors and metrics (the BGPPeer's name).
	Name string
	// Address of the router; neighbors are keyed by it.
	Address netip.Addr
	// Port of the router (default 179).
	Port uint16
	// ASN of the router.
	ASN uint32
	// LocalASN overrides Config.LocalASN for this session.
	LocalASN uint32
	// HoldTime proposed to the router (default 90s; at least 3s).
	HoldTime time.Duration
	// KeepaliveTime between keepalives (default HoldTime/3).
	KeepaliveTime time.Duration
	// Password for TCP MD5 (RFC 2385); empty for none.
	Password Secret
	// EBGPMultihopTTL is the TTL towards an eBGP router that is not directly
	// connected; 0 means directly connected.
	EBGPMultihopTTL uint8
	// SourceAddress the session is opened from; unset lets the kernel choose.
	SourceAddress netip.Addr
	// GracefulRestart asks the router to keep our routes for RestartTime
	// (default 120s) while this speaker restarts.
	GracefulRestart bool
	RestartTime     time.Duration
}

func (p Peer) label() string {
	if p.Name != "" {
		return fmt.Sprintf("peer %s (%s)", p.Name, addrString(p.Address))
	}
	return "peer " + addrString(p.Address)
}

// normalize fills defaults so that two Peers that mean the same session
// compare equal.
func (p Peer) normalize(c Config) Peer {
	if p.Port == 0 {
		p.Port = DefaultPort
	}
	if p.LocalASN == 0 {
		p.LocalASN = c.LocalASN
	}
	if p.HoldTime == 0 {
		p.HoldTime = DefaultHoldTime
	}
	if p.KeepaliveTime == 0 {
		p.KeepaliveTime = p.HoldTime / 3
	}
	if p.GracefulRestart && p.RestartTime == 0 {
		p.RestartTime = DefaultRestartTime
	}
	if !p.GracefulRestart {
		p.RestartTime = 0
	}
	return p
}

// validate checks a normalized peer.
func (p Peer) validate() error {
	var errs []error
	if !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.IsMulticast() || p.Address.Is4In6() {
		errs = append(errs, fmt.Errorf("address: must be a unicast IP address, got %q", addrString(p.Address)))
	}
	if p.Address.Zone() != "" {
		errs = append(errs, fmt.Errorf("address: zones (link-local peering) are not supported, got %s", p.Address))
	}
	if p.ASN == 0 {
		errs = append(errs, errors.New("peerASN: must be 1-4294967295"))
	}
	if p.LocalASN == 0 {
		errs = append(errs, errors.New("myASN: must be 1-4294967295"))
	}
	if p.HoldTime < minHoldTime || p.HoldTime > maxHoldTime || p.HoldTime%time.Second != 0 {
		// gobgp cannot run a session without keepalives: it replaces a
		// hold time of 0 by 90s, which would silently differ from the spec.
		errs = append(errs, fmt.Errorf("holdTime: must be whole seconds from 3s to 65535s (0s, no keepalives, is not supported by the embedded speaker), got %s", p.HoldTime))
	}
	if p.KeepaliveTime < time.Second || p.KeepaliveTime >= p.HoldTime || p.KeepaliveTime%time.Second != 0 {
		errs = append(errs, fmt.Errorf("keepaliveTime: must be whole seconds, at least 1s and shorter than holdTime %s, got %s", p.HoldTime, p.KeepaliveTime))
	}
	if len(p.Password) > maxMD5PasswordLength {
		errs = append(errs, fmt.Errorf("password: TCP MD5 keys are at most %d bytes, got %d", maxMD5PasswordLength, len(p.Password)))
	}
	if p.EBGPMultihopTTL != 0 {
		if p.ASN == p.LocalASN {
			errs = append(errs, errors.New("ebgpMultiHop: applies only to eBGP sessions (peerASN != myASN)"))
		}
		if p.EBGPMultihopTTL < 2 {
			errs = append(errs, fmt.Errorf("ebgpMultiHop: must be 2-255, got %d", p.EBGPMultihopTTL))
		}
	}
	if p.SourceAddress.IsValid() && p.Address.IsValid() {
		if p.SourceAddress.Is4() != p.Address.Is4() || p.SourceAddress.IsUnspecified() {
			errs = append(errs, fmt.Errorf("sourceAddress: %s must be a non-zero address of the same family as the peer address %s", p.SourceAddress, p.Address))
		}
	}
	if p.GracefulRestart && (p.RestartTime < time.Second || p.RestartTime > maxRestartTime || p.RestartTime%time.Second != 0) {
		errs = append(errs, fmt.Errorf("gracefulRestart.restartTime: must be whole seconds from 1s to 4095s, got %s", p.RestartTime))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", p.label(), err)
	}
	return nil
}

// Route is one address this node advertises.
type Route struct {
	// Prefix is the VIP as a host route: /32 or /128.
	Prefix netip.Prefix
	// NextHop overrides the configured next hop of the prefix's family.
	NextHop netip.Addr
	// Communities as in IPPool.spec.announce.communities.
	Communities []string
	// LocalPreference for iBGP sessions (eBGP routers ignore it).
	LocalPreference *uint32
}

// route is a validated Route in the form it is compared and sent in.
type route struct {
	prefix      netip.Prefix
	nextHop     netip.Addr // invalid: the session's local address
	communities Communities
	localPref   *uint32
}

func (r route) equal(o route) bool {
	return r.prefix == o.prefix && r.nextHop == o.nextHop && r.communities.Equal(o.communities) &&
		(r.localPref == nil) == (o.localPref == nil) && (r.localPref == nil || *r.localPref == *o.localPref)
}

// compile validates r and resolves its next hop against the configuration.
func (r Route) compile(c Config) (route, error) {
	fail := func(format string, args ...any) (route, error) {
		return route{}, fmt.Errorf("route %s: %s", prefixString(r.Prefix), fmt.Sprintf(format, args...))
	}
	p := r.Prefix
	if !p.IsValid() || p.Addr().Is4In6() {
		return fail("prefix: must be an IPv4 /32 or IPv6 /128")
	}
	if p.Bits() != p.Addr().BitLen() {
		return fail("prefix: a VIP is advertised as a host route (/32 or /128), got /%d", p.Bits())
	}
	if p.Addr().IsUnspecified() || p.Addr().IsMulticast() || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
		return fail("prefix: %s cannot be advertised", p.Addr())
	}
	nh := r.NextHop
	if !nh.IsValid() {
		if p.Addr().Is4() {
			nh = c.NextHopIPv4
		} else {
			nh = c.NextHopIPv6
		}
	}
	if nh.IsValid() && (nh.Is4() != p.Addr().Is4() || nh.IsUnspecified() || nh.Is4In6()) {
		return fail("nextHop: %s must be a non-zero address of the prefix's family", nh)
	}
	comms, err := ParseCommunities(r.Communities)
	if err != nil {
		return fail("%v", err)
	}
	var lp *uint32
	if r.LocalPreference != nil {
		v := *r.LocalPreference
		lp = &v
	}
	return route{prefix: p, nextHop: nh, communities: comms, localPref: lp}, nil
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return "(invalid)"
	}
	return p.String()
}
