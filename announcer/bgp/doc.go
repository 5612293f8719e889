// Package bgp is pvelb-announcer's BGP speaker (gobgp v3), run in its own
// process, pvelb-bgp-speaker (see package speakerproc), so that the
// announcer itself never links gobgp: every
// node eligible for a BGP-mode IPPool's address advertises it as a /32 or
// /128 with itself as next hop, so the router spreads traffic over all of
// them (ECMP) and drops a node's next hop when its session ends.
//
// # Speaker
//
//	s, err := bgp.New(bgp.Config{
//		RouterID:    nodeIPv4,      // IPv4 even on IPv6-only nodes: see desired.RouterIDFor
//		LocalASN:    64512,         // default; each BGPPeer's myASN overrides it
//		ListenPort:  bgp.NoListen,  // outbound only: never competes for port 179
//		NextHopIPv4: nodeIPv4,      // optional; unset = each session's local address
//		NextHopIPv6: nodeIPv6,      // optional; also enables IPv6 routes on IPv4 sessions
//	})
//	err = s.Start(ctx)
//	err = s.SetPeers(ctx, []bgp.Peer{...})   // reconcile neighbors
//	err = s.SetRoutes(ctx, []bgp.Route{...}) // reconcile advertised routes
//	states, err := s.PeerStates(ctx)         // for status and metrics
//	err = s.Stop(ctx) // withdraw everything, wait until sent, then close sessions
//
// SetPeers and SetRoutes take the complete desired set each time. Invalid
// entries are skipped and reported together (errors name the peer or route
// and the field) while the valid ones are applied; an invalid edit of a peer
// or route that is already in effect keeps the one in effect, so a typo never
// cuts a working session or VIP. A changed peer gets a new session.
//
// # Controller integration
//
// The announcer controller computes everything BGP-related for this node on
// every sync with package desired and sends it to pvelb-bgp-speaker, which
// calls Reconcile:
//
//	selected, err := desired.SelectPeers(allBGPPeers, node.Labels) // spec.nodeSelector
//	for _, p := range selected {
//		ns, name, key, ok := desired.PasswordKey(p.Spec) // read the Secret if ok
//		in = append(in, desired.PeerInput{Name: p.Name, Spec: p.Spec, Password: pw})
//	}
//	for each address of a BGP-mode pool this node is eligible for
//	(pool nodeSelector, not labelled node.kubernetes.io/exclude-from-external-load-balancers,
//	 and for externalTrafficPolicy Local a ready endpoint on this node):
//		vips = append(vips, desired.VIPFromPool(ip, pool)) // the pool's communities and localPreference
//	err = speaker.Reconcile(ctx, desired.Desired{Peers: in, VIPs: vips})
//
// No election is involved: eligibility alone decides, and liveness is the
// BGP session itself (a dead node's session drops, the router removes its
// next hop). The child reports session states, from which the announcer
// exports pvelb_announcer_bgp_session_up, _session_state, _routes_advertised
// and pvelb_announcer_bgp_routes (NewCollector exports the same from a
// Speaker in this process). On SIGTERM the announcer has the child Stop.
//
// Graceful restart (BGPPeer.spec.gracefulRestart) makes routers keep a
// node's routes for restartTime when its speaker dies without closing the
// session; a clean Stop withdraws them first, so a drained node leaves no
// stale routes behind.
//
// A BGPPeer's holdTime of 0s (no keepalives) is refused: gobgp cannot run a
// session without keepalives.
package bgp
