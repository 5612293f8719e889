package allocator

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestFailedEditKeepsOnlyWhatMayStillBeShared: share-a and share-b share an
// address; share-b is edited so that its request cannot be met. It keeps the
// address only while it may still share it as it is now; otherwise the
// address is leaving for it (reserved until its status drops it), and once
// dropped neither a restart nor a third Service puts two Services on it.
func TestFailedEditKeepsOnlyWhatMayStillBeShared(t *testing.T) {
	full := pool(t, "full", "192.0.2.9/32")
	full.AutoAssign = false
	const shared = "192.0.2.1"
	tests := []struct {
		name   string
		edit   func(*Service)
		reason Reason
		keeps  bool
	}{
		{"ports clash, pool full", withPorts(Port{"TCP", 80}), ReasonPoolExhausted, false},
		{"ports clash, address outside every pool", func(s *Service) {
			s.Ports = []Port{{"TCP", 80}}
			s.RequestedIPs = ips("198.51.100.7")
		}, ReasonNotInAnyPool, false},
		{"ports clash, named pool full", func(s *Service) {
			s.Ports = []Port{{"TCP", 80}}
			s.RequestedPool = "full"
		}, ReasonPoolExhausted, false},
		{"sharing key removed, pool full", withShare(""), ReasonPoolExhausted, false},
		{"address outside every pool, no clash", withIPs("198.51.100.7"), ReasonNotInAnyPool, true},
		{"named pool full, no clash", withPool("full"), ReasonPoolExhausted, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New()
			pools := []Pool{pool(t, "main", "192.0.2.1-192.0.2.2"), full}
			a.SetPools(pools)
			shareA := svc("default", "share-a", withShare("web"), withPorts(Port{"TCP", 80}))
			shareB := svc("default", "share-b", withShare("web"), withPorts(Port{"TCP", 443}))
			mustAssign(t, a, shareA)
			mustAssign(t, a, shareB)
			mustAssign(t, a, svc("default", "filler"))
			mustAssign(t, a, svc("default", "full-user", withPool("full")))

			edited := shareB
			edited.Ports = slices.Clone(shareB.Ports)
			tt.edit(&edited)
			r, err := a.Assign(edited, ips(shared))
			wantErr(t, err, tt.reason, "")
			if tt.keeps {
				if strs(r.IPs) != shared || r.Changed || len(a.Leaving(edited.Key)) != 0 {
					t.Fatalf("kept %s (changed %v, leaving %s), want %s kept", strs(r.IPs), r.Changed, strs(a.Leaving(edited.Key)), shared)
				}
				checkInvariants(t, a)
				return
			}
			if len(r.IPs) != 0 || !r.Changed {
				t.Fatalf("kept %s (changed %v), want nothing: share-b may not share %s any more", strs(r.IPs), r.Changed, shared)
			}
			if got := strs(a.Leaving(edited.Key)); got != shared {
				t.Fatalf("leaving %s, want %s reserved until the status drops it", got, shared)
			}
			checkInvariants(t, a)
			// The status dropped it: share-b holds nothing.
			a.Shown(edited.Key, nil)
			if got := a.Held(edited.Key); got != nil {
				t.Fatalf("share-b still holds %s", strs(got))
			}
			// Retrying fails the same way and holds nothing.
			if r, err := a.Assign(edited, nil); err == nil || len(r.IPs) != 0 {
				t.Fatalf("retry got %s, %v", strs(r.IPs), err)
			}

			// A restart from the statuses (share-b shows nothing) agrees, and
			// a third Service gets nothing: the pool is full.
			b := New()
			b.SetPools(pools)
			b.Restore([]RestoreItem{
				{Service: shareA, Current: ips(shared), Created: time.Unix(1, 0)},
				{Service: edited, Created: time.Unix(2, 0)},
				{Service: svc("default", "filler"), Current: ips("192.0.2.2"), Created: time.Unix(3, 0)},
				{Service: svc("default", "full-user", withPool("full")), Current: ips("192.0.2.9"), Created: time.Unix(4, 0)},
			})
			_, err = b.Assign(svc("default", "third"), nil)
			wantErr(t, err, ReasonPoolExhausted, "")
			checkInvariants(t, b)
		})
	}
}

// TestPoolChangeNeverMovesAnAddress: a Service naming its pool keeps an
// address the pool no longer contains, through reconciles and a restart
// (restore, then Assign in a fresh allocator); an edit of the pool it names
// still moves it.
func TestPoolChangeNeverMovesAnAddress(t *testing.T) {
	gamma := pool(t, "gamma", "192.0.2.128/28")
	delta := pool(t, "delta", "192.0.2.160/28")
	cover := pool(t, "cover", "192.0.2.132/32")
	tests := []struct {
		name  string
		after []Pool // the pools once gamma shrank
	}{
		{"outside every pool", []Pool{pool(t, "gamma", "192.0.2.128/30"), delta}},
		{"inside another pool", []Pool{pool(t, "gamma", "192.0.2.128/30"), delta, cover}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New()
			a.SetPools([]Pool{gamma, delta})
			kept := svc("default", "kept", withPool("gamma"))
			var fillers []ServiceKey
			for _, n := range []string{"f0", "f1", "f2", "f3"} {
				mustAssign(t, a, svc("default", n, withPool("gamma")))
				fillers = append(fillers, ServiceKey{"default", n})
			}
			if r := mustAssign(t, a, kept); strs(r.IPs) != "192.0.2.132" {
				t.Fatalf("kept got %s", strs(r.IPs))
			}
			for _, k := range fillers {
				a.Release(k)
			}
			a.SetPools(tt.after)
			for i := range 2 {
				if r := mustAssign(t, a, kept, "192.0.2.132"); strs(r.IPs) != "192.0.2.132" || r.Changed {
					t.Fatalf("reconcile %d moved kept to %s", i, strs(r.IPs))
				}
			}
			b := New()
			b.SetPools(tt.after)
			b.Restore([]RestoreItem{{Service: kept, Current: ips("192.0.2.132")}})
			if r := mustAssign(t, b, kept, "192.0.2.132"); strs(r.IPs) != "192.0.2.132" || r.Changed {
				t.Fatalf("restart moved kept to %s", strs(r.IPs))
			}
			moved := kept
			moved.RequestedPool = "delta"
			if r := mustAssign(t, b, moved, "192.0.2.132"); strs(r.IPs) != "192.0.2.160" {
				t.Fatalf("edit to pool delta gave %s, want 192.0.2.160", strs(r.IPs))
			}
			checkInvariants(t, b)
		})
	}
}

// TestOwnRecordWinsOverStaleStatus: an Assign with a status older than the
// last Assign (a cache that has not seen the status write yet) changes
// nothing: the Service neither moves twice nor lets another Service take the
// address it is returning to.
func TestOwnRecordWinsOverStaleStatus(t *testing.T) {
	tests := []struct {
		name        string
		first, edit Service
		stale, want string
	}{
		{"pool changed", svc("default", "s", withPool("p1")), svc("default", "s", withPool("p2")), "192.0.2.0", "198.51.100.0"},
		{"family added", svc("default", "s"), svc("default", "s", withFams(RequireDualStack, IPv4, IPv6)), "192.0.2.0", "192.0.2.0,2001:db8::"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New()
			a.SetPools([]Pool{pool(t, "p1", "192.0.2.0/30", "2001:db8::/126"), pool(t, "p2", "198.51.100.0/30")})
			mustAssign(t, a, tt.first)
			if r := mustAssign(t, a, tt.edit, tt.stale); strs(r.IPs) != tt.want {
				t.Fatalf("edit gave %s, want %s", strs(r.IPs), tt.want)
			}
			for i := range 3 {
				if r := mustAssign(t, a, tt.edit, tt.stale); strs(r.IPs) != tt.want {
					t.Fatalf("stale reconcile %d moved it to %s, want %s", i, strs(r.IPs), tt.want)
				}
			}
			checkInvariants(t, a)
		})
	}
}

// TestMovedAddressIsReservedUntilTheStatusDropsIt: a Service that moves (or
// is withdrawn) keeps its old address reserved until Shown says its status
// no longer shows it, and can take it back meanwhile.
func TestMovedAddressIsReservedUntilTheStatusDropsIt(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool(t, "p1", "192.0.2.0/31"), pool(t, "p2", "198.51.100.0/30")})
	s := svc("default", "s", withPool("p1"))
	mustAssign(t, a, s)
	moved := svc("default", "s", withPool("p2"))
	if r := mustAssign(t, a, moved, "192.0.2.0"); strs(r.IPs) != "198.51.100.0" {
		t.Fatalf("moved to %s", strs(r.IPs))
	}
	other := svc("default", "other", withPool("p1"))
	if r := mustAssign(t, a, other); strs(r.IPs) != "192.0.2.1" {
		t.Fatalf("other got %s while s still shows 192.0.2.0, want 192.0.2.1", strs(r.IPs))
	}
	a.Shown(s.Key, ips("192.0.2.0", "198.51.100.0")) // still both
	if got := strs(a.Leaving(s.Key)); got != "192.0.2.0" {
		t.Fatalf("leaving %s", got)
	}
	a.Shown(s.Key, ips("198.51.100.0"))
	if got := a.Leaving(s.Key); len(got) != 0 {
		t.Fatalf("still leaving %s", strs(got))
	}
	a.Release(other.Key)
	if r := mustAssign(t, a, svc("default", "third", withPool("p1"))); strs(r.IPs) != "192.0.2.0" {
		t.Fatalf("third got %s, want the freed 192.0.2.0", strs(r.IPs))
	}

	// Withdrawn, then wanted again before the status dropped it: the same address.
	a.Withdraw(s.Key)
	if got := strs(a.Held(s.Key)); got != "198.51.100.0" || a.Assigned(s.Key) != nil {
		t.Fatalf("withdrawn: held %s assigned %s", got, strs(a.Assigned(s.Key)))
	}
	if r := mustAssign(t, a, moved); strs(r.IPs) != "198.51.100.0" {
		t.Fatalf("back to %s, want 198.51.100.0", strs(r.IPs))
	}
	checkInvariants(t, a)
}

// TestRestorePrefersLiveServices: of a terminating Service and a live one
// showing one address, the live one keeps it whatever their age; a
// terminating Service's addresses are only reserved until its status drops
// them.
func TestRestorePrefersLiveServices(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool(t, "p", "192.0.2.0-192.0.2.2")})
	cs := a.Restore([]RestoreItem{
		{Service: svc("default", "old"), Current: ips("192.0.2.1"), Created: time.Unix(1, 0), Terminating: true},
		{Service: svc("default", "new"), Current: ips("192.0.2.1"), Created: time.Unix(2, 0)},
		{Service: svc("default", "going"), Current: ips("192.0.2.2"), Created: time.Unix(3, 0), Terminating: true},
	})
	if len(cs) != 1 || cs[0].Loser != (ServiceKey{"default", "old"}) || cs[0].Winner != (ServiceKey{"default", "new"}) {
		t.Fatalf("conflicts %+v, want old losing to new", cs)
	}
	going := ServiceKey{"default", "going"}
	if a.Assigned(going) != nil || strs(a.Leaving(going)) != "192.0.2.2" {
		t.Fatalf("going: assigned %s leaving %s", strs(a.Assigned(going)), strs(a.Leaving(going)))
	}
	if r := mustAssign(t, a, svc("default", "x")); strs(r.IPs) != "192.0.2.0" {
		t.Fatalf("x got %s", strs(r.IPs))
	}
	if r, err := a.Assign(svc("default", "y"), nil); err == nil {
		t.Fatalf("y got %s while going still shows 192.0.2.2", strs(r.IPs))
	}
	a.Shown(going, nil)
	if r := mustAssign(t, a, svc("default", "y")); strs(r.IPs) != "192.0.2.2" {
		t.Fatalf("y got %s, want 192.0.2.2", strs(r.IPs))
	}
	checkInvariants(t, a)
}

// owners returns the Services holding ip, sorted (several when shared).
func owners(a *Allocator, ip netip.Addr) []ServiceKey {
	return slices.Clone(a.holders[ip])
}

// A holder edited since its last Assign is joined only as it is now: once
// Refresh records that share-a no longer sets the key (its own next Assign
// has not run yet), share-b with that key gets an address of its own
// instead of one two Services would show while they may not share it. A
// refresh that keeps the key still lets share-b join; a refresh changes no
// address.
func TestRefreshedHolderIsJoinedAsItIsNow(t *testing.T) {
	tests := []struct {
		name    string
		now     Service // share-a as it is now
		want    string  // share-b's address
		wantErr bool
	}{
		{"key removed", svc("ns", "share-a"), "192.0.2.1", false},
		{"key changed", svc("ns", "share-a", withShare("other")), "192.0.2.1", false},
		{"ports now clash", svc("ns", "share-a", withShare("k"), withPorts(Port{"TCP", 81})), "192.0.2.1", false},
		{"unchanged", svc("ns", "share-a", withShare("k")), "192.0.2.0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New()
			a.SetPools([]Pool{pool(t, "main", "192.0.2.0/30")})
			mustAssign(t, a, svc("ns", "share-a", withShare("k")))
			a.Refresh(tt.now)
			if got := strs(a.Assigned(ServiceKey{"ns", "share-a"})); got != "192.0.2.0" {
				t.Fatalf("share-a holds %s after Refresh, want 192.0.2.0 kept", got)
			}
			r := mustAssign(t, a, svc("ns", "share-b", withShare("k"), withPorts(Port{"TCP", 81})))
			if got := strs(r.IPs); got != tt.want {
				t.Fatalf("share-b got %s, want %s", got, tt.want)
			}
		})
	}
	t.Run("a Service holding nothing is not recorded", func(t *testing.T) {
		a := New()
		a.SetPools([]Pool{pool(t, "main", "192.0.2.0/30")})
		a.Refresh(svc("ns", "x", withShare("k")))
		if got := a.Held(ServiceKey{"ns", "x"}); len(got) != 0 {
			t.Fatalf("Refresh of a Service holding nothing made it hold %v", got)
		}
	})
}

// A sharer whose partner moved away keeps the address: the partner's
// reservation of it while its status may still show it (leaving) does not
// count against the Service that holds it, only against one that would
// join it. The churn suite saw a class Service move when its partner's
// sharing key was edited and the partner moved first.
func TestPartnerLeavingDoesNotMoveTheKeeper(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool(t, "main", "192.0.2.0/29")})
	keeper := svc("ns", "keeper", withShare("k"))
	mustAssign(t, a, keeper)
	mustAssign(t, a, svc("ns", "editor", withShare("k"), withPorts(Port{"TCP", 81})))
	// The editor's key changes: it moves, 192.0.2.0 stays reserved for it.
	r := mustAssign(t, a, svc("ns", "editor", withShare("other"), withPorts(Port{"TCP", 81})), "192.0.2.0")
	if strs(r.IPs) == "192.0.2.0" || strs(a.Leaving(ServiceKey{"ns", "editor"})) != "192.0.2.0" {
		t.Fatalf("editor: %s, leaving %s; want moved, 192.0.2.0 leaving", strs(r.IPs), strs(a.Leaving(ServiceKey{"ns", "editor"})))
	}
	if got := strs(mustAssign(t, a, keeper, "192.0.2.0").IPs); got != "192.0.2.0" {
		t.Fatalf("keeper moved to %s; want 192.0.2.0 kept", got)
	}
	if got := strs(a.Keep(keeper, ips("192.0.2.0")).IPs); got != "192.0.2.0" {
		t.Fatalf("Keep gave %s; want 192.0.2.0", got)
	}
	// A newcomer with the editor's new key may not join it on its way out.
	if got := strs(mustAssign(t, a, svc("ns", "new", withShare("other"), withPorts(Port{"TCP", 82}))).IPs); got == "192.0.2.0" {
		t.Fatal("a newcomer joined an address on its way out")
	}
}
