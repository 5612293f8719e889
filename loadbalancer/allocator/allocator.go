package allocator

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"math/big"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/pvelb/pvelb/names"
)

// holder is what the allocator remembers of a Service that holds addresses.
type holder struct {
	// svc is the Service as last seen by Assign (or Restore): sharing is
	// decided on what the Service is now, not on what it was when it got
	// its addresses.
	svc Service
	// ips are the Service's addresses, in its ipFamilies order.
	ips []netip.Addr
	// leaving are addresses the Service no longer has but may still show in
	// its status: they stay reserved for it until the caller reports (Shown)
	// that the status no longer shows them, so that no other Service can
	// show one of them at the same time.
	leaving []netip.Addr
	// forPool is the pvelb.io/pool the Service asked for when its addresses
	// were chosen. An address outside the pool the Service names is kept
	// while the request is unchanged (the pool changed, not the request), and
	// given up once the request changes.
	forPool string
}

// held is every address the holder reserves: its own and the leaving ones.
func (h *holder) held() []netip.Addr {
	return append(slices.Clone(h.ips), h.leaving...)
}

// Allocator tracks pools and which Services hold which addresses.
type Allocator struct {
	pools   []*Pool // in comparePools order
	byName  map[string]*Pool
	holders map[netip.Addr][]ServiceKey // sorted keys per address
	svcs    map[ServiceKey]*holder
	used    addrSet
	// sharing maps a sharing group (namespace and sharing key, see
	// groupOf) to the addresses its members have (leaving ones excluded), so
	// a Service joining a group finds its address without scanning all
	// holders.
	sharing map[string]map[netip.Addr]struct{}
}

// New returns an empty allocator.
func New() *Allocator {
	return &Allocator{
		byName:  map[string]*Pool{},
		holders: map[netip.Addr][]ServiceKey{},
		svcs:    map[ServiceKey]*holder{},
		sharing: map[string]map[netip.Addr]struct{}{},
	}
}

// Result is the outcome of a successful Assign.
type Result struct {
	// IPs in the Service's ipFamilies order.
	IPs []netip.Addr
	// Pools[i] is the pool IPs[i] belongs to ("" when it lies outside every
	// pool, e.g. kept after its pool shrank).
	Pools []string
	// Changed is false when the Service kept exactly the addresses it had.
	Changed bool
	// Notes explain a partial outcome (PreferDualStack without a second
	// family), for an Event.
	Notes []string
}

// SetPools replaces the pool set. Assignments are never moved: an address
// now outside every pool stays with its Service, and a Warning names it. The
// warnings list every such address each time, sorted, so the caller can
// emit (deduplicated) Events.
func (a *Allocator) SetPools(pools []Pool) []Warning {
	a.pools = a.pools[:0]
	a.byName = make(map[string]*Pool, len(pools))
	for i := range pools {
		p := pools[i]
		p.Ranges = mergeRanges(slices.Clone(p.Ranges))
		a.pools = append(a.pools, &p)
		a.byName[p.Name] = &p
	}
	slices.SortStableFunc(a.pools, comparePools)
	var ws []Warning
	for ip, keys := range a.holders {
		if a.poolOf(ip) != nil {
			continue
		}
		for _, k := range keys {
			ws = append(ws, Warning{Service: k, Address: ip,
				Msg: fmt.Sprintf("address %s of %s is outside every IPPool; it is kept, and announced with the default settings "+
					"(ARP or NDP from one elected node on its default interface, no node selector) until a pool holds it again; "+
					"recreate or widen the pool, or move the Service to a pool address", ip, k)})
		}
	}
	sort.Slice(ws, func(i, j int) bool {
		if ws[i].Service != ws[j].Service {
			return ws[i].Service.less(ws[j].Service)
		}
		return ws[i].Address.Less(ws[j].Address)
	})
	return ws
}

// poolOf returns the first pool (in priority order) containing ip, or nil.
func (a *Allocator) poolOf(ip netip.Addr) *Pool {
	for _, p := range a.pools {
		if p.Contains(ip) {
			return p
		}
	}
	return nil
}

// PoolOf is the name of the pool ip belongs to now ("" when none holds it),
// by the rule of Holding.
func (a *Allocator) PoolOf(ip netip.Addr) string {
	if p := a.poolOf(ip); p != nil {
		return p.Name
	}
	return ""
}

// Holding returns the name of the pool ip belongs to: of the pools that
// contain it, the one of highest priority, then the first by name; "" when
// none does. It is the one rule for an address's pool, whatever pool it was
// allocated from: pvelb-ccm records it in pvelb.io/allocated-pool and admits
// the address in the firewall by that pool's node selector, and the
// announcer announces it with that pool's settings, so an IPPool renamed
// over the same range keeps its addresses announced as before. Only
// overlapping pools (refused, but keeping what they handed out) make the
// order matter.
func Holding(pools []Pool, ip netip.Addr) string {
	var best *Pool
	for i := range pools {
		if p := &pools[i]; p.Contains(ip) && (best == nil || comparePools(p, best) < 0) {
			best = p
		}
	}
	if best == nil {
		return ""
	}
	return best.Name
}

// comparePools orders pools for allocation and for Holding, in MetalLB's
// order so that imported pools keep their meaning: a lower priority first,
// pools without one (0) after every pool with one, then by name.
func comparePools(a, b *Pool) int {
	if a.Priority != b.Priority {
		return cmp.Compare(rank(a.Priority), rank(b.Priority))
	}
	return strings.Compare(a.Name, b.Name)
}

// rank is the sort key of a priority: 0 (none) after every set value.
func rank(priority int32) int64 {
	if priority <= 0 {
		return math.MaxInt64
	}
	return int64(priority)
}

// Assigned returns the addresses a Service holds.
func (a *Allocator) Assigned(key ServiceKey) []netip.Addr {
	if h := a.svcs[key]; h != nil {
		return slices.Clone(h.ips)
	}
	return nil
}

// Release frees every address the Service holds at once (shared addresses
// stay with the other Services). Use it when the Service is gone, so that
// no status can show its addresses any more; otherwise use Withdraw.
func (a *Allocator) Release(key ServiceKey) {
	a.set(key, nil)
}

// Withdraw takes the Service's addresses away but keeps them reserved for it
// as leaving addresses until Shown reports that its status no longer shows
// them (or Release): freeing them earlier would let another Service show an
// address that this one still shows.
func (a *Allocator) Withdraw(key ServiceKey) {
	h := a.svcs[key]
	if h == nil {
		return
	}
	a.set(key, &holder{svc: h.svc, leaving: union(h.leaving, h.ips), forPool: h.forPool})
}

// Shown tells which addresses the Service's status shows now (nil when the
// status shows none, or the Service is gone): leaving addresses it no longer
// shows are freed. It reports whether any was.
func (a *Allocator) Shown(key ServiceKey, shown []netip.Addr) bool {
	h := a.svcs[key]
	if h == nil || len(h.leaving) == 0 {
		return false
	}
	keep := slices.DeleteFunc(slices.Clone(h.leaving), func(ip netip.Addr) bool { return !slices.Contains(shown, ip) })
	if len(keep) == len(h.leaving) {
		return false
	}
	a.set(key, &holder{svc: h.svc, ips: h.ips, leaving: keep, forPool: h.forPool})
	return true
}

// Leaving returns the addresses the Service no longer has but that stay
// reserved for it until its status stops showing them.
func (a *Allocator) Leaving(key ServiceKey) []netip.Addr {
	if h := a.svcs[key]; h != nil {
		return slices.Clone(h.leaving)
	}
	return nil
}

// Held returns every address reserved for the Service: its own, then the
// leaving ones.
func (a *Allocator) Held(key ServiceKey) []netip.Addr {
	if h := a.svcs[key]; h != nil {
		return h.held()
	}
	return nil
}

// groupOf names a Service's sharing group: the sharing key within its
// namespace. Keys are not shared across namespaces, so a Service in another
// namespace cannot join a group by naming its key (it could take the group's
// address off the air, e.g. with externalTrafficPolicy Local and no
// endpoints).
func groupOf(s *Service) string {
	if s.SharingKey == "" {
		return ""
	}
	return s.Key.Namespace + "/" + s.SharingKey
}

// set replaces what key holds with h (nil: nothing), keeping the per-address
// holders, the used set and the sharing index in step.
func (a *Allocator) set(key ServiceKey, h *holder) {
	touched := map[netip.Addr]bool{}
	var groups []string
	if old := a.svcs[key]; old != nil {
		for _, ip := range old.held() {
			touched[ip] = true
			a.holders[ip] = slices.DeleteFunc(a.holders[ip], func(k ServiceKey) bool { return k == key })
		}
		groups = append(groups, groupOf(&old.svc))
		delete(a.svcs, key)
	}
	if h != nil && len(h.ips)+len(h.leaving) > 0 {
		a.svcs[key] = h
		for _, ip := range h.held() {
			touched[ip] = true
			keys := a.holders[ip]
			i, found := slices.BinarySearchFunc(keys, key, func(x, y ServiceKey) int {
				switch {
				case x == y:
					return 0
				case x.less(y):
					return -1
				}
				return 1
			})
			if !found {
				a.holders[ip] = slices.Insert(keys, i, key)
			}
		}
		groups = append(groups, groupOf(&h.svc))
	}
	for ip := range touched {
		if len(a.holders[ip]) == 0 {
			delete(a.holders, ip)
			a.used.remove(ip)
		} else {
			a.used.add(ip)
		}
		for _, g := range groups {
			a.reindex(ip, g)
		}
	}
}

// reindex records ip under group g exactly when some member of g has it
// (leaving addresses do not count: nobody should join an address on its way
// out).
func (a *Allocator) reindex(ip netip.Addr, g string) {
	if g == "" {
		return
	}
	for _, k := range a.holders[ip] {
		if h := a.svcs[k]; groupOf(&h.svc) == g && slices.Contains(h.ips, ip) {
			if a.sharing[g] == nil {
				a.sharing[g] = map[netip.Addr]struct{}{}
			}
			a.sharing[g][ip] = struct{}{}
			return
		}
	}
	delete(a.sharing[g], ip)
	if len(a.sharing[g]) == 0 {
		delete(a.sharing, g)
	}
}

// union is a followed by the addresses of b it lacks.
func union(a, b []netip.Addr) []netip.Addr {
	out := slices.Clone(a)
	for _, ip := range b {
		if !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out
}

// canShare explains why svc may not use ip alongside its current holders
// (nil when it may). Holders equal to svc itself are ignored.
func (a *Allocator) canShare(ip netip.Addr, svc *Service) *Error {
	return a.shareRefusal(ip, svc, false)
}

// canKeep is canShare for an address svc has: a holder for which ip is only
// leaving (it moved away, its status may still show ip) does not count. It
// is on its way out, and the Service that stayed must not move for it.
func (a *Allocator) canKeep(ip netip.Addr, svc *Service) *Error {
	return a.shareRefusal(ip, svc, true)
}

func (a *Allocator) shareRefusal(ip netip.Addr, svc *Service, ignoreLeaving bool) *Error {
	for _, k := range a.holders[ip] {
		if k == svc.Key {
			continue
		}
		if ignoreLeaving && !slices.Contains(a.svcs[k].ips, ip) {
			continue
		}
		other := &a.svcs[k].svc
		why := sharingRefusal(svc, other)
		if why == "" {
			continue
		}
		reason := ReasonSharingRefused
		msg := fmt.Sprintf("address %s is held by %s and sharing is refused: %s", ip, k, why)
		if svc.SharingKey == "" || other.SharingKey == "" {
			reason = ReasonHeldBy
			msg = fmt.Sprintf("address %s is held by %s (%s)", ip, k, why)
		}
		return &Error{Reason: reason, Address: ip, Holder: k, Msg: msg}
	}
	return nil
}

// sharingRefusal returns why two Services may not share an address, or "".
func sharingRefusal(s, o *Service) string {
	switch {
	case s.SharingKey == "" && o.SharingKey == "":
		return fmt.Sprintf("neither Service sets %s", names.AnnotationSharingKey)
	case s.SharingKey == "":
		return fmt.Sprintf("this Service sets no %s", names.AnnotationSharingKey)
	case o.SharingKey == "":
		return fmt.Sprintf("%s sets no %s", o.Key, names.AnnotationSharingKey)
	case s.SharingKey != o.SharingKey:
		return fmt.Sprintf("sharing keys differ (%q vs %q)", s.SharingKey, o.SharingKey)
	case s.Key.Namespace != o.Key.Namespace:
		return fmt.Sprintf("sharing keys are per namespace, and %s is in namespace %s", o.Key, o.Key.Namespace)
	case s.etp() != o.etp():
		return fmt.Sprintf("externalTrafficPolicy differs (%s vs %s)", s.etp(), o.etp())
	case s.etp() == "Local" && !maps.Equal(s.Selector, o.Selector):
		return "externalTrafficPolicy Local requires the same pod selector"
	}
	var clash []string
	for _, p := range s.Ports {
		for _, q := range o.Ports {
			if strings.EqualFold(p.Protocol, q.Protocol) && p.Port == q.Port {
				clash = append(clash, p.String())
				break
			}
		}
	}
	if len(clash) > 0 {
		return "ports " + strings.Join(clash, ", ") + " clash"
	}
	return ""
}

// Assign gives svc its addresses. shown are the addresses its status shows;
// they count only for a Service the allocator holds nothing for (after a
// restore conflict, say): otherwise the allocator's own record wins, since a
// status read from a cache may be older than the last Assign, and preferring
// it would move an address twice (and free, for a moment, the one the
// Service returns to).
//
// An address the Service has is kept while it still fits the request, so
// restarts and unrelated edits never move an address. An address outside
// the pool the Service names is kept while pvelb.io/pool is what it was
// when the address was chosen: the pool changed, not the request. Otherwise
// requested addresses are honoured, else addresses are picked from matching
// pools. Addresses the Service gives up stay reserved for it as leaving (see
// Withdraw) until Shown reports its status no longer shows them.
//
// On error the Service keeps what it holds as long as that may still be
// held under the Service as it is now; an address it may no longer hold
// (its ports now clash with a Service it shares with, say) becomes leaving.
// The returned Result then describes what it keeps, so that the caller can
// take the rest off its status.
func (a *Allocator) Assign(svc Service, shown []netip.Addr) (Result, error) {
	svc = cloneService(svc)
	if err := validateService(&svc); err != nil {
		return a.keepWhatFits(&svc, shown, err)
	}
	h := a.svcs[svc.Key]
	current := shown
	unchangedPool := false
	if h != nil {
		current = h.held()
		unchangedPool = h.forPool == svc.RequestedPool
	}
	fams := svc.families()

	var chosen []netip.Addr
	var notes []string
	if len(svc.RequestedIPs) > 0 {
		ips, err := a.checkRequested(&svc, fams)
		if err != nil {
			return a.keepWhatFits(&svc, shown, err)
		}
		chosen = ips
	} else {
		taken := map[netip.Addr]bool{}
		for i, f := range fams {
			ip, err := a.pickFamily(&svc, f, current, unchangedPool, taken)
			if err != nil {
				dual := svc.IPFamilyPolicy == PreferDualStack
				if dual && (i > 0 || len(fams) > 1) {
					notes = append(notes, fmt.Sprintf("PreferDualStack: no %s address: %v", f, err))
					continue
				}
				if svc.IPFamilyPolicy == RequireDualStack {
					err = &Error{Reason: ReasonFamilyUnavailable, Address: addrOf(err), Pool: poolOfErr(err),
						Msg: fmt.Sprintf("RequireDualStack needs an %s address: %v", f, err)}
				}
				return a.keepWhatFits(&svc, shown, err)
			}
			taken[ip] = true
			chosen = append(chosen, ip)
		}
		if len(chosen) == 0 {
			return a.keepWhatFits(&svc, shown, &Error{Reason: ReasonFamilyUnavailable,
				Msg: "PreferDualStack: no address of any family: " + strings.Join(notes, "; ")})
		}
	}

	// Commit: what is no longer wanted is leaving, what is new is taken.
	var leaving []netip.Addr
	changed := h == nil || !slices.Equal(h.ips, chosen)
	if h != nil {
		leaving = slices.DeleteFunc(h.held(), func(ip netip.Addr) bool { return slices.Contains(chosen, ip) })
	}
	a.set(svc.Key, &holder{svc: svc, ips: chosen, leaving: leaving, forPool: svc.RequestedPool})
	res := a.result(chosen)
	res.Changed = changed || !sameSet(shown, chosen)
	res.Notes = notes
	return res, nil
}

// keepWhatFits is Assign's failure: the Service keeps each address it has
// that it may still hold as it is now (a wanted family, shareable with the
// other holders), and the others become leaving. The holder takes the
// Service's new spec, so that others sharing with it are checked against
// what it is now; forPool stays, as the request was not met. The Result
// lists what is kept.
func (a *Allocator) keepWhatFits(svc *Service, shown []netip.Addr, err error) (Result, error) {
	return a.Keep(*svc, shown), err
}

// Keep is what a Service whose request cannot be met keeps: each address it
// has that it may still hold as it is now (a wanted family, shareable with
// the other holders); the others become leaving. The holder takes svc's
// spec, so that Services sharing with it are checked against what it is
// now; the recorded pool request stays, as it was not met. Callers use it
// directly when the request does not even parse (svc then carries no
// requested addresses). An invalid svc changes nothing.
func (a *Allocator) Keep(svc Service, shown []netip.Addr) Result {
	svc = cloneService(svc)
	h := a.svcs[svc.Key]
	if h == nil {
		return Result{Changed: len(shown) > 0}
	}
	if validateService(&svc) != nil {
		res := a.result(h.ips)
		res.Changed = !sameSet(shown, h.ips)
		return res
	}
	fams := svc.families()
	keep := []netip.Addr{}
	leaving := slices.Clone(h.leaving)
	for _, ip := range h.ips {
		if slices.Contains(fams, familyOf(ip)) && !slices.ContainsFunc(keep, func(k netip.Addr) bool { return familyOf(k) == familyOf(ip) }) &&
			a.canKeep(ip, &svc) == nil {
			keep = append(keep, ip)
		} else {
			leaving = append(leaving, ip)
		}
	}
	a.set(svc.Key, &holder{svc: svc, ips: keep, leaving: leaving, forPool: h.forPool})
	res := a.result(keep)
	res.Changed = !sameSet(shown, keep)
	return res
}

// result describes ips with the pools they belong to now.
func (a *Allocator) result(ips []netip.Addr) Result {
	res := Result{IPs: slices.Clone(ips)}
	for _, ip := range ips {
		name := ""
		if p := a.poolOf(ip); p != nil {
			name = p.Name
		}
		res.Pools = append(res.Pools, name)
	}
	return res
}

func addrOf(err error) netip.Addr {
	if e, ok := err.(*Error); ok {
		return e.Address
	}
	return netip.Addr{}
}

func poolOfErr(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Pool
	}
	return ""
}

func sameSet(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func cloneService(s Service) Service {
	s.RequestedIPs = slices.Clone(s.RequestedIPs)
	s.Ports = slices.Clone(s.Ports)
	s.IPFamilies = slices.Clone(s.IPFamilies)
	s.Selector = maps.Clone(s.Selector)
	s.NamespaceLabels = maps.Clone(s.NamespaceLabels)
	s.Labels = maps.Clone(s.Labels)
	return s
}

func validateService(s *Service) error {
	if s.Key.Namespace == "" || s.Key.Name == "" {
		return &Error{Reason: ReasonInvalidRequest, Msg: "service key needs a namespace and a name"}
	}
	switch s.IPFamilyPolicy {
	case "", SingleStack, PreferDualStack, RequireDualStack:
	default:
		return &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("spec.ipFamilyPolicy %q is not SingleStack, PreferDualStack or RequireDualStack", s.IPFamilyPolicy)}
	}
	for i, f := range s.IPFamilies {
		if f != IPv4 && f != IPv6 {
			return &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("spec.ipFamilies[%d]: %q is not IPv4 or IPv6", i, f)}
		}
		if i > 0 && s.IPFamilies[0] == f {
			return &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("spec.ipFamilies lists %s twice", f)}
		}
	}
	for i := range s.Ports {
		s.Ports[i].Protocol = strings.ToUpper(s.Ports[i].Protocol)
		if s.Ports[i].Protocol == "" {
			s.Ports[i].Protocol = "TCP"
		}
	}
	return nil
}

// checkRequested validates explicitly requested addresses: one per wanted
// family, each in a pool that allows the Service (the requested pool, if
// named), and free or shareable. Addresses the Service already holds are
// accepted even outside every pool, so a shrunk pool does not break a
// Service that asked for its address.
func (a *Allocator) checkRequested(svc *Service, fams []Family) ([]netip.Addr, error) {
	byFam := map[Family]netip.Addr{}
	for _, ip := range svc.RequestedIPs {
		f := familyOf(ip)
		if !slices.Contains(fams, f) {
			return nil, &Error{Reason: ReasonRequestConflict, Address: ip,
				Msg: fmt.Sprintf("requested address %s is %s but the Service's ipFamilies/ipFamilyPolicy allow only %s", ip, f, joinFams(fams))}
		}
		if prev, dup := byFam[f]; dup {
			return nil, &Error{Reason: ReasonRequestConflict, Address: ip,
				Msg: fmt.Sprintf("requested addresses %s and %s are both %s; request at most one per family", prev, ip, f)}
		}
		byFam[f] = ip
	}
	if svc.IPFamilyPolicy == RequireDualStack && len(byFam) < 2 {
		return nil, &Error{Reason: ReasonRequestConflict,
			Msg: fmt.Sprintf("RequireDualStack with requested addresses needs one IPv4 and one IPv6 address in %s", names.AnnotationIPs)}
	}
	var held []netip.Addr
	if h := a.svcs[svc.Key]; h != nil {
		held = h.ips
	}
	var out []netip.Addr
	for _, f := range fams {
		ip, ok := byFam[f]
		if !ok {
			continue
		}
		if !slices.Contains(held, ip) {
			if err := a.requestedInPool(svc, ip); err != nil {
				return nil, err
			}
		}
		if err := a.canShare(ip, svc); err != nil {
			return nil, err
		}
		out = append(out, ip)
	}
	return out, nil
}

func joinFams(fs []Family) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = string(f)
	}
	return strings.Join(s, " and ")
}

func (a *Allocator) requestedInPool(svc *Service, ip netip.Addr) error {
	if svc.RequestedPool != "" {
		p := a.byName[svc.RequestedPool]
		if p == nil {
			return &Error{Reason: ReasonNoMatchingPool, Pool: svc.RequestedPool, Address: ip,
				Msg: fmt.Sprintf("pool %s (annotation %s) does not exist", svc.RequestedPool, svc.poolAnnotation())}
		}
		if !p.Contains(ip) {
			return &Error{Reason: ReasonRequestConflict, Pool: p.Name, Address: ip,
				Msg: fmt.Sprintf("requested address %s is not in pool %s named by %s", ip, p.Name, svc.poolAnnotation())}
		}
		return a.poolUsableFor(p, svc, ip)
	}
	var refusals []string
	for _, p := range a.pools {
		if !p.Contains(ip) {
			continue
		}
		err := a.poolUsableFor(p, svc, ip)
		if err == nil {
			return nil
		}
		refusals = append(refusals, err.Error())
	}
	if refusals == nil {
		return &Error{Reason: ReasonNotInAnyPool, Address: ip,
			Msg: fmt.Sprintf("requested address %s is not in any IPPool", ip)}
	}
	return &Error{Reason: ReasonNoMatchingPool, Address: ip, Msg: strings.Join(refusals, "; ")}
}

func (a *Allocator) poolUsableFor(p *Pool, svc *Service, ip netip.Addr) error {
	if !p.Usable {
		return &Error{Reason: ReasonNoMatchingPool, Pool: p.Name, Address: ip,
			Msg: fmt.Sprintf("pool %s is refused (see its status conditions, e.g. Overlapping) and gives no new addresses", p.Name)}
	}
	if ok, why := p.allows(svc); !ok {
		return &Error{Reason: ReasonNoMatchingPool, Pool: p.Name, Address: ip, Msg: why}
	}
	return nil
}

// pickFamily returns svc's address of family f: the current one if it still
// fits (shareable, and in the pool it names unless unchangedPool says the
// request is the one the address was chosen for), else one shared with its
// sharing group, else the lowest free one from the first matching pool.
func (a *Allocator) pickFamily(svc *Service, f Family, current []netip.Addr, unchangedPool bool, taken map[netip.Addr]bool) (netip.Addr, error) {
	for _, ip := range current {
		if familyOf(ip) != f || taken[ip] {
			continue
		}
		if svc.RequestedPool != "" && !unchangedPool {
			if p := a.byName[svc.RequestedPool]; p != nil && !p.Contains(ip) {
				continue // the Service now asks for another pool: honour it
			}
		}
		share := a.canShare
		if h := a.svcs[svc.Key]; h != nil && slices.Contains(h.ips, ip) {
			share = a.canKeep
		}
		if share(ip, svc) == nil {
			return ip, nil
		}
	}

	cands, err := a.candidatePools(svc, f)
	if err != nil {
		return netip.Addr{}, err
	}
	if g := groupOf(svc); g != "" {
		var best netip.Addr
		for _, p := range cands {
			for ip := range a.sharing[g] {
				if familyOf(ip) != f || taken[ip] || !p.Contains(ip) || a.canShare(ip, svc) != nil {
					continue
				}
				if !best.IsValid() || ip.Less(best) {
					best = ip
				}
			}
			if best.IsValid() {
				return best, nil
			}
		}
	}
	for _, p := range cands {
		if ip, ok := a.lowestFree(p, f, taken); ok {
			return ip, nil
		}
	}
	names := make([]string, len(cands))
	for i, p := range cands {
		names[i] = p.Name
	}
	return netip.Addr{}, &Error{Reason: ReasonPoolExhausted, Pool: names[0],
		Msg: fmt.Sprintf("no free %s address in pool %s", f, strings.Join(names, ", "))}
}

// candidatePools lists the pools svc may get a new address of family f from,
// in priority order, or explains why there are none.
func (a *Allocator) candidatePools(svc *Service, f Family) ([]*Pool, error) {
	if svc.RequestedPool != "" {
		p := a.byName[svc.RequestedPool]
		if p == nil {
			return nil, &Error{Reason: ReasonNoMatchingPool, Pool: svc.RequestedPool,
				Msg: fmt.Sprintf("pool %s (annotation %s) does not exist", svc.RequestedPool, svc.poolAnnotation())}
		}
		if !p.hasFamily(f) {
			return nil, &Error{Reason: ReasonNoMatchingPool, Pool: p.Name,
				Msg: fmt.Sprintf("pool %s has no %s addresses", p.Name, f)}
		}
		if err := a.poolUsableFor(p, svc, netip.Addr{}); err != nil {
			return nil, err
		}
		return []*Pool{p}, nil
	}
	var out []*Pool
	var why []string
	for _, p := range a.pools {
		if !p.hasFamily(f) {
			continue
		}
		if !p.AutoAssign {
			why = append(why, fmt.Sprintf("pool %s has autoAssign off (name it in %s)", p.Name, names.AnnotationPool))
			continue
		}
		if err := a.poolUsableFor(p, svc, netip.Addr{}); err != nil {
			why = append(why, err.Error())
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		msg := fmt.Sprintf("no IPPool with %s addresses serves %s", f, svc.Key)
		if len(why) > 0 {
			msg += ": " + strings.Join(why, "; ")
		}
		return nil, &Error{Reason: ReasonNoMatchingPool, Msg: msg}
	}
	return out, nil
}

// lowestFree finds the lowest address of family f in p that nobody holds.
// Each step either returns or jumps over a whole interval of used addresses
// (or one buggy address), so the cost depends on fragmentation, not on the
// pool's size: a /64 costs the same as a /24.
func (a *Allocator) lowestFree(p *Pool, f Family, taken map[netip.Addr]bool) (netip.Addr, bool) {
	for _, r := range p.Ranges {
		if r.Family() != f {
			continue
		}
		x := r.First
		for x.IsValid() && r.Contains(x) {
			n := a.used.nextFree(x)
			if !n.IsValid() || !r.Contains(n) {
				break
			}
			if (p.AvoidBuggyIPs && isBuggy(n)) || taken[n] {
				x = n.Next()
				continue
			}
			return n, true
		}
	}
	return netip.Addr{}, false
}

// Restore replays addresses found in Services' status on start, before any
// Assign, so that already-assigned Services keep their addresses. Items are
// replayed live Services first, then Services being deleted, each oldest
// first (then by key): when two Services claim one address they may not
// share, a live Service keeps it over one on its way out (whose status may
// be a stale leftover), and of two live ones the older keeps it. The loser
// loses that address and is reported; its next Assign picks another one.
// A terminating Service's addresses are restored as leaving: reserved while
// its status shows them, never handed to it again. The pool each Service
// names is taken as the one its addresses were chosen for, so a restart
// never moves an address out of a pool that shrank. Addresses are restored
// even outside every pool (they are kept, see SetPools). Restore never picks
// new addresses.
func (a *Allocator) Restore(items []RestoreItem) []Conflict {
	items = slices.Clone(items)
	sort.SliceStable(items, func(i, j int) bool {
		if items[i].Terminating != items[j].Terminating {
			return !items[i].Terminating
		}
		if !items[i].Created.Equal(items[j].Created) {
			return items[i].Created.Before(items[j].Created)
		}
		return items[i].Service.Key.less(items[j].Service.Key)
	})
	var conflicts []Conflict
	for _, it := range items {
		svc := cloneService(it.Service)
		if validateService(&svc) != nil {
			continue
		}
		a.set(svc.Key, nil)
		fams := svc.families()
		var keep []netip.Addr
		for _, ip := range it.Current {
			if !slices.Contains(fams, familyOf(ip)) || slices.ContainsFunc(keep, func(k netip.Addr) bool { return familyOf(k) == familyOf(ip) }) {
				if !it.Terminating {
					continue // no longer wanted; Assign will settle it
				}
			}
			if slices.Contains(keep, ip) {
				continue
			}
			if err := a.canShare(ip, &svc); err != nil {
				conflicts = append(conflicts, Conflict{Loser: svc.Key, Winner: err.Holder, Address: ip, Err: err})
				continue
			}
			keep = append(keep, ip)
		}
		h := &holder{svc: svc, ips: keep, forPool: svc.RequestedPool}
		if it.Terminating {
			h.ips, h.leaving = nil, keep
		}
		a.set(svc.Key, h)
	}
	return conflicts
}

// FamilyUsage counts addresses of one family in a pool. Total and Free are
// big integers because IPv6 pools exceed 64 bits.
type FamilyUsage struct {
	Total *big.Int
	Used  int64
	Free  *big.Int
}

// PoolUsage is one pool's usage, for its status.
type PoolUsage struct {
	Name       string
	IPv4, IPv6 *FamilyUsage // nil when the pool has no addresses of that family
}

// Usage reports every pool's usage, sorted by name.
func (a *Allocator) Usage() []PoolUsage {
	names := slices.Sorted(maps.Keys(a.byName))
	out := make([]PoolUsage, 0, len(names))
	for _, n := range names {
		p := a.byName[n]
		u := PoolUsage{Name: n}
		for _, r := range p.Ranges {
			fu := &u.IPv4
			if r.Family() == IPv6 {
				fu = &u.IPv6
			}
			if *fu == nil {
				*fu = &FamilyUsage{Total: new(big.Int)}
			}
			(*fu).Total.Add((*fu).Total, r.size())
			if p.AvoidBuggyIPs {
				(*fu).Total.Sub((*fu).Total, r.buggyIn())
			}
		}
		for ip := range a.holders {
			if !p.Contains(ip) {
				continue
			}
			if ip.Is4() {
				u.IPv4.Used++
			} else {
				u.IPv6.Used++
			}
		}
		for _, fu := range []*FamilyUsage{u.IPv4, u.IPv6} {
			if fu != nil {
				fu.Free = new(big.Int).Sub(fu.Total, big.NewInt(fu.Used))
			}
		}
		out = append(out, u)
	}
	return out
}

// Refresh records svc as the Service is now, without changing what it
// holds. Sharing is decided on what a holder is now: a holder edited since
// its last Assign (its sharing key removed, its ports changed) must not be
// joined on the strength of what it was, or two Services would show one
// address they may not share until the holder's own next Assign moves it.
// That Assign still decides whether it keeps its addresses. A Service that
// holds nothing is not recorded.
func (a *Allocator) Refresh(svc Service) {
	h := a.svcs[svc.Key]
	if h == nil {
		return
	}
	nh := *h
	nh.svc = cloneService(svc)
	a.set(svc.Key, &nh)
}

// Group lists the Services sharing an address under svc's sharing key in
// its namespace (svc itself excluded): the holders svc may join.
func (a *Allocator) Group(svc Service) []ServiceKey {
	g := groupOf(&svc)
	if g == "" {
		return nil
	}
	var out []ServiceKey
	for ip := range a.sharing[g] {
		for _, k := range a.holders[ip] {
			if k != svc.Key && !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	return out
}
