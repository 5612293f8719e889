package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// peerChanges is what SetPeers must do to the running speaker.
type peerChanges struct {
	add    []Peer // new neighbors
	update []Peer // changed neighbors (replaced: a new session)
	remove []Peer // neighbors no longer wanted
	// keep holds the desired, valid peers by address: the new state.
	keep map[netip.Addr]Peer
}

// diffPeers compares the running neighbors with the desired ones. Invalid or
// duplicate desired peers are left out and reported; a running neighbor
// whose new spec is invalid is kept as it is rather than torn down, so a
// typo in an edit does not cut a working session.
func diffPeers(cfg Config, current map[netip.Addr]Peer, desired []Peer) (peerChanges, error) {
	ch := peerChanges{keep: map[netip.Addr]Peer{}}
	var errs []error
	names := map[netip.Addr]string{}
	invalid := map[netip.Addr]bool{}
	for _, d := range desired {
		p := d.normalize(cfg)
		if err := p.validate(); err != nil {
			errs = append(errs, err)
			invalid[p.Address] = true
			continue
		}
		if other, dup := names[p.Address]; dup {
			errs = append(errs, fmt.Errorf("%s: address already used by peer %s; a speaker has one session per address", p.label(), other))
			continue
		}
		names[p.Address] = p.Name
		ch.keep[p.Address] = p
		old, running := current[p.Address]
		switch {
		case !running:
			ch.add = append(ch.add, p)
		case old != p:
			ch.update = append(ch.update, p)
		}
	}
	for addr, old := range current {
		if _, ok := ch.keep[addr]; ok {
			continue
		}
		if invalid[addr] {
			ch.keep[addr] = old
			continue
		}
		ch.remove = append(ch.remove, old)
	}
	byAddr := func(a, b Peer) int { return a.Address.Compare(b.Address) }
	slices.SortFunc(ch.add, byAddr)
	slices.SortFunc(ch.update, byAddr)
	slices.SortFunc(ch.remove, byAddr)
	return ch, errors.Join(errs...)
}

// routeChanges is what SetRoutes must do.
type routeChanges struct {
	put    []route        // new or changed: (re)advertise
	remove []netip.Prefix // withdraw
	keep   map[netip.Prefix]route
}

// diffRoutes compares advertised routes with the desired ones. An invalid
// desired route is reported; if it was advertised before, the old one stays
// (withdrawing on a bad edit would drop traffic for a working VIP).
func diffRoutes(cfg Config, current map[netip.Prefix]route, desired []Route) (routeChanges, error) {
	ch := routeChanges{keep: map[netip.Prefix]route{}}
	var errs []error
	invalid := map[netip.Prefix]bool{}
	for _, d := range desired {
		r, err := d.compile(cfg)
		if err != nil {
			errs = append(errs, err)
			invalid[d.Prefix] = true
			continue
		}
		if prev, dup := ch.keep[r.prefix]; dup {
			if !prev.equal(r) {
				errs = append(errs, fmt.Errorf("route %s: listed twice with different attributes; keeping the first", r.prefix))
			}
			continue
		}
		ch.keep[r.prefix] = r
		if old, ok := current[r.prefix]; !ok || !old.equal(r) {
			ch.put = append(ch.put, r)
		}
	}
	for p, old := range current {
		if _, ok := ch.keep[p]; ok {
			continue
		}
		if invalid[p] {
			ch.keep[p] = old
			continue
		}
		ch.remove = append(ch.remove, p)
	}
	slices.SortFunc(ch.put, func(a, b route) int { return cmp.Compare(a.prefix.String(), b.prefix.String()) })
	slices.SortFunc(ch.remove, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return ch, errors.Join(errs...)
}
