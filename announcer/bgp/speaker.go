package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"k8s.io/klog/v2"
)

// Speaker is an embedded BGP speaker that advertises this node's VIPs.
// It is safe for concurrent use.
type Speaker struct {
	cfg    Config
	logger klog.Logger

	mu      sync.Mutex
	srv     *server.BgpServer
	running bool
	peers   map[netip.Addr]Peer
	routes  map[netip.Prefix]advertised
}

type advertised struct {
	route
	uuid []byte // gobgp's handle for DeletePath
}

// New validates cfg and returns a stopped speaker.
func New(cfg Config) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bgp config: %w", err)
	}
	return &Speaker{
		cfg:    cfg,
		logger: klog.Background().WithName("bgp"),
		peers:  map[netip.Addr]Peer{},
		routes: map[netip.Prefix]advertised{},
	}, nil
}

// Config returns the speaker's configuration.
func (s *Speaker) Config() Config { return s.cfg }

// Start runs the BGP server. Peers and routes set before Start are applied.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return errors.New("bgp: speaker already started")
	}
	s.logger = klog.FromContext(ctx).WithName("bgp")
	srv := server.NewBgpServer(server.LoggerOption(klogAdapter{logger: s.logger}))
	go srv.Serve()
	g := &api.Global{
		Asn:        s.cfg.LocalASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: s.cfg.listenPort(),
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		srv.Stop()
		return fmt.Errorf("bgp: starting speaker (router ID %s, AS %d, listen port %d): %w", s.cfg.RouterID, s.cfg.LocalASN, s.cfg.listenPort(), err)
	}
	s.srv, s.running = srv, true
	s.logger.Info("BGP speaker started", "routerID", s.cfg.RouterID, "asn", s.cfg.LocalASN, "listenPort", s.cfg.ListenPort)

	// Re-apply what was set while stopped.
	peers := make([]Peer, 0, len(s.peers))
	for _, p := range s.peers {
		peers = append(peers, p)
	}
	routes := s.routes
	s.peers, s.routes = map[netip.Addr]Peer{}, map[netip.Prefix]advertised{}
	var errs []error
	if err := s.setPeersLocked(ctx, peers); err != nil {
		errs = append(errs, err)
	}
	for _, r := range routes {
		if err := s.putRouteLocked(ctx, r.route); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SetPeers makes the speaker's neighbors exactly the valid peers given:
// new ones are added, removed ones are shut down, and changed ones are
// replaced by a new session (gobgp applies transport, timer and password
// changes only to a new connection anyway). Invalid peers are reported in the
// error and skipped; the others are still applied.
func (s *Speaker) SetPeers(ctx context.Context, peers []Peer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setPeersLocked(ctx, peers)
}

func (s *Speaker) setPeersLocked(ctx context.Context, peers []Peer) error {
	ch, err := diffPeers(s.cfg, s.peers, peers)
	errs := []error{err}
	if !s.running {
		s.peers = ch.keep
		return errors.Join(errs...)
	}
	for _, p := range ch.remove {
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()}); err != nil {
			errs = append(errs, fmt.Errorf("%s: removing: %w", p.label(), err))
			continue
		}
		delete(s.peers, p.Address)
		s.logger.Info("BGP peer removed", "peer", p.Name, "address", p.Address)
	}
	for _, p := range ch.update {
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()}); err != nil {
			errs = append(errs, fmt.Errorf("%s: replacing: %w", p.label(), err))
			continue
		}
		delete(s.peers, p.Address)
		ch.add = append(ch.add, p)
	}
	for _, p := range ch.add {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			errs = append(errs, fmt.Errorf("%s: adding: %w", p.label(), err))
			continue
		}
		s.peers[p.Address] = p
		s.logger.Info("BGP peer configured", "peer", p.Name, "address", p.Address, "peerASN", p.ASN, "myASN", p.LocalASN, "port", p.Port)
	}
	return errors.Join(errs...)
}

// families are the address families a session carries: the peer's own, and
// the other one when the node has a next hop of that family (MP-BGP).
func (s *Speaker) families(p Peer) []*api.Family {
	if p.Address.Is4() {
		if s.cfg.NextHopIPv6.IsValid() {
			return []*api.Family{familyIPv4, familyIPv6}
		}
		return []*api.Family{familyIPv4}
	}
	if s.cfg.NextHopIPv4.IsValid() {
		return []*api.Family{familyIPv6, familyIPv4}
	}
	return []*api.Family{familyIPv6}
}

func (s *Speaker) apiPeer(p Peer) *api.Peer {
	retry := uint64(s.cfg.connectRetry() / time.Second)
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.LocalASN,
			AuthPassword:    string(p.Password),
			Description:     p.Name,
		},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:               uint64(p.HoldTime / time.Second),
			KeepaliveInterval:      uint64(p.KeepaliveTime / time.Second),
			ConnectRetry:           retry,
			IdleHoldTimeAfterReset: retry,
		}},
	}
	if p.SourceAddress.IsValid() {
		ap.Transport.LocalAddress = p.SourceAddress.String()
	}
	if p.EBGPMultihopTTL != 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.EBGPMultihopTTL)}
	}
	if p.GracefulRestart {
		ap.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(p.RestartTime / time.Second)}
	}
	for _, f := range s.families(p) {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if p.GracefulRestart {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		ap.AfiSafis = append(ap.AfiSafis, af)
	}
	return ap
}

// SetRoutes makes the advertised routes exactly the valid routes given:
// new and changed ones are (re)advertised, missing ones withdrawn. Invalid
// routes are reported and skipped (a previously advertised version stays).
func (s *Speaker) SetRoutes(ctx context.Context, routes []Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	current := make(map[netip.Prefix]route, len(s.routes))
	for p, a := range s.routes {
		current[p] = a.route
	}
	ch, err := diffRoutes(s.cfg, current, routes)
	errs := []error{err}
	for _, p := range ch.remove {
		if err := s.withdrawLocked(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range ch.put {
		if err := s.putRouteLocked(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Speaker) putRouteLocked(ctx context.Context, r route) error {
	if !s.running {
		s.routes[r.prefix] = advertised{route: r}
		return nil
	}
	path, err := apiPath(r)
	if err != nil {
		return err
	}
	// Adding a path for a prefix we already originate replaces it (the new
	// path implicitly withdraws the old one), so a change is one update.
	resp, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
	if err != nil {
		return fmt.Errorf("route %s: advertising: %w", r.prefix, err)
	}
	if old, ok := s.routes[r.prefix]; ok && old.uuid != nil && string(old.uuid) != string(resp.Uuid) {
		// gobgp keeps paths by UUID; make sure only the new one remains.
		_ = s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: old.uuid})
		if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
			return fmt.Errorf("route %s: re-advertising: %w", r.prefix, err)
		}
	}
	s.routes[r.prefix] = advertised{route: r, uuid: resp.Uuid}
	s.logger.V(2).Info("BGP route advertised", "prefix", r.prefix, "nextHop", addrString(r.nextHop))
	return nil
}

func (s *Speaker) withdrawLocked(ctx context.Context, p netip.Prefix) error {
	a, ok := s.routes[p]
	if !ok {
		return nil
	}
	if s.running {
		path, err := apiPath(a.route)
		if err != nil {
			return err
		}
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: path.Family, Path: path}); err != nil {
			return fmt.Errorf("route %s: withdrawing: %w", p, err)
		}
		s.logger.V(2).Info("BGP route withdrawn", "prefix", p)
	}
	delete(s.routes, p)
	return nil
}

func (s *Speaker) withdrawAllLocked(ctx context.Context) error {
	var errs []error
	for p := range s.routes {
		if err := s.withdrawLocked(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Stop shuts the speaker down gracefully: it withdraws every route, waits
// (bounded by ctx and one second) until no established session still has a
// route queued to it, then closes the sessions. Routers thus drop this node's
// next hop at once instead of waiting for the hold timer, or keeping stale
// routes for the graceful-restart time. Peers and routes are forgotten.
func (s *Speaker) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return nil
	}
	err := s.withdrawAllLocked(ctx)
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if werr := s.waitAdjOutEmpty(wctx); werr != nil {
		s.logger.Info("BGP withdrawals may not all have been sent before shutdown", "err", werr)
	}
	s.srv.Stop()
	s.running = false
	s.srv = nil
	s.peers = map[netip.Addr]Peer{}
	s.routes = map[netip.Prefix]advertised{}
	s.logger.Info("BGP speaker stopped")
	return err
}

// waitAdjOutEmpty polls the established sessions' Adj-RIB-Out until none
// holds a route: gobgp sends withdrawals asynchronously.
func (s *Speaker) waitAdjOutEmpty(ctx context.Context) error {
	for {
		pending := 0
		for addr := range s.peers {
			if st, err := s.peerState(ctx, addr); err != nil || st.State != StateEstablished {
				continue
			}
			for _, f := range []*api.Family{familyIPv4, familyIPv6} {
				_ = s.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_ADJ_OUT, Name: addr.String(), Family: f},
					func(*api.Destination) { pending++ })
			}
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d routes still queued: %w", pending, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// SessionState is a BGP finite-state-machine state (RFC 4271 8.2.2).
type SessionState string

const (
	StateUnknown     SessionState = "unknown"
	StateIdle        SessionState = "idle"
	StateConnect     SessionState = "connect"
	StateActive      SessionState = "active"
	StateOpenSent    SessionState = "opensent"
	StateOpenConfirm SessionState = "openconfirm"
	StateEstablished SessionState = "established"
)

var sessionStates = map[api.PeerState_SessionState]SessionState{
	api.PeerState_IDLE:        StateIdle,
	api.PeerState_CONNECT:     StateConnect,
	api.PeerState_ACTIVE:      StateActive,
	api.PeerState_OPENSENT:    StateOpenSent,
	api.PeerState_OPENCONFIRM: StateOpenConfirm,
	api.PeerState_ESTABLISHED: StateEstablished,
}

// PeerState is one session's state for metrics and status.
type PeerState struct {
	Name    string
	Address netip.Addr
	ASN     uint32
	State   SessionState
	// Since is when the session was last established (zero if never).
	Since time.Time
	// Advertised counts routes sent to the peer and currently held there.
	Advertised uint64
}

// PeerStates reports every configured peer, sorted by address.
func (s *Speaker) PeerStates(ctx context.Context) ([]PeerState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PeerState, 0, len(s.peers))
	for addr, p := range s.peers {
		st := PeerState{Name: p.Name, Address: addr, ASN: p.ASN, State: StateIdle}
		if s.running {
			got, err := s.peerState(ctx, addr)
			if err != nil {
				return nil, err
			}
			st.State, st.Since, st.Advertised = got.State, got.Since, got.Advertised
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address.Less(out[j].Address) })
	return out, nil
}

func (s *Speaker) peerState(ctx context.Context, addr netip.Addr) (PeerState, error) {
	st := PeerState{Address: addr, State: StateUnknown}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{Address: addr.String()}, func(p *api.Peer) {
		if p.State != nil {
			if v, ok := sessionStates[p.State.SessionState]; ok {
				st.State = v
			}
		}
		if p.Timers != nil && p.Timers.State != nil && p.Timers.State.Uptime != nil && st.State == StateEstablished {
			st.Since = p.Timers.State.Uptime.AsTime()
		}
	})
	if err == nil && st.State == StateEstablished {
		// The Adj-RIB-Out holds what the peer has from us. (gobgp's own
		// "advertised" counter also counts End-of-RIB markers.)
		for _, f := range []*api.Family{familyIPv4, familyIPv6} {
			err = s.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_ADJ_OUT, Name: addr.String(), Family: f},
				func(*api.Destination) { st.Advertised++ })
			if err != nil {
				break
			}
		}
	}
	if err != nil {
		return st, fmt.Errorf("bgp: reading state of peer %s: %w", addr, err)
	}
	return st, nil
}

// RouteCount is the number of routes the speaker originates.
func (s *Speaker) RouteCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.routes)
}
