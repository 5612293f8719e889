package allocator

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name   string
		ann    map[string]string
		lbIP   string
		want   string
		reason Reason
		msg    string
	}{
		{name: "nothing", want: ""},
		{name: "annotation list", ann: map[string]string{names.AnnotationIPs: "192.0.2.1, 2001:db8::1"}, want: "192.0.2.1,2001:db8::1"},
		{name: "duplicates collapse", ann: map[string]string{names.AnnotationIPs: "192.0.2.1,192.0.2.1"}, want: "192.0.2.1"},
		{name: "loadBalancerIP", lbIP: "192.0.2.9", want: "192.0.2.9"},
		{name: "both agree", ann: map[string]string{names.AnnotationIPs: "192.0.2.9,2001:db8::9"}, lbIP: "192.0.2.9", want: "192.0.2.9,2001:db8::9"},
		{name: "both differ", ann: map[string]string{names.AnnotationIPs: "192.0.2.1"}, lbIP: "192.0.2.9", reason: ReasonRequestConflict, msg: "spec.loadBalancerIP 192.0.2.9 is not among annotation pvelb.io/ips"},
		{name: "bad annotation", ann: map[string]string{names.AnnotationIPs: "192.0.2.1,nope"}, reason: ReasonInvalidRequest, msg: `annotation pvelb.io/ips: "nope" is not an IP address`},
		{name: "empty annotation", ann: map[string]string{names.AnnotationIPs: " , "}, reason: ReasonInvalidRequest, msg: "pvelb.io/ips is empty"},
		{name: "bad loadBalancerIP", lbIP: "192.0.2.300", reason: ReasonInvalidRequest, msg: "spec.loadBalancerIP"},
		{name: "mapped address refused", ann: map[string]string{names.AnnotationIPs: "::ffff:192.0.2.1"}, reason: ReasonInvalidRequest, msg: "not an IP address"},
		{name: "MetalLB's annotation", ann: map[string]string{names.MetalLBLoadBalancerIPs: "192.0.2.5,2001:db8::5"}, want: "192.0.2.5,2001:db8::5"},
		{name: "MetalLB's older annotation", ann: map[string]string{names.MetalLBLoadBalancerIPsOld: "192.0.2.6"}, want: "192.0.2.6"},
		{name: "Cilium's annotation", ann: map[string]string{names.CiliumIPs: "192.0.2.7"}, want: "192.0.2.7"},
		{name: "pvelb's own wins over an alias", ann: map[string]string{names.AnnotationIPs: "192.0.2.1", names.CiliumIPs: "192.0.2.7"}, want: "192.0.2.1"},
		{name: "alias and loadBalancerIP differ: the error names the alias", ann: map[string]string{names.MetalLBLoadBalancerIPs: "192.0.2.1"}, lbIP: "192.0.2.9",
			reason: ReasonRequestConflict, msg: "spec.loadBalancerIP 192.0.2.9 is not among annotation metallb.io/loadBalancerIPs (192.0.2.1)"},
		{name: "bad alias: the error names it", ann: map[string]string{names.CiliumIPs: "nope"}, reason: ReasonInvalidRequest, msg: `annotation lbipam.cilium.io/ips: "nope" is not an IP address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequest(tt.ann, tt.lbIP)
			if tt.reason != "" {
				wantErr(t, err, tt.reason, tt.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strs(got) != tt.want {
				t.Fatalf("got %s, want %s", strs(got), tt.want)
			}
		})
	}
}

// TestRestartKeepsEveryAddress simulates a pvelb-ccm restart: a fresh
// allocator restores from status, then reconciles every Service in a
// different order; no address may move.
func TestRestartKeepsEveryAddress(t *testing.T) {
	pools := []Pool{pool(t, "a", "192.0.2.0/26", "2001:db8::/120"), pool(t, "b", "198.51.100.0/28")}
	var services []Service
	for i := 0; i < 60; i++ {
		s := svc("ns"+string(rune('a'+i%3)), "svc"+string(rune('A'+i%26))+string(rune('a'+i/26)))
		switch i % 5 {
		case 1:
			s.IPFamilyPolicy, s.IPFamilies = PreferDualStack, []Family{IPv4, IPv6}
		case 2:
			s.SharingKey = "shared"
			s.Ports = []Port{{"TCP", int32(1000 + i)}}
		case 3:
			s.RequestedPool = "b"
		}
		services = append(services, s)
	}
	a := New()
	a.SetPools(pools)
	first := map[ServiceKey][]netip.Addr{}
	var items []RestoreItem
	for i, s := range services {
		r := mustAssign(t, a, s)
		first[s.Key] = r.IPs
		items = append(items, RestoreItem{Service: s, Current: r.IPs, Created: time.Unix(int64(i), 0)})
	}
	// Free some low addresses so that a moving allocator would be tempted.
	a.Release(services[0].Key)
	delete(first, services[0].Key)
	items = items[1:]

	b := New()
	b.SetPools(pools)
	rand.New(rand.NewPCG(5, 6)).Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
	if cs := b.Restore(items); len(cs) != 0 {
		t.Fatalf("conflicts on clean restore: %v", cs)
	}
	order := slices.Clone(services[1:])
	slices.Reverse(order)
	for _, s := range order {
		r := mustAssign(t, b, s, strings.Split(strs(first[s.Key]), ",")...)
		if !slices.Equal(r.IPs, first[s.Key]) {
			t.Fatalf("%s moved from %s to %s after restart", s.Key, strs(first[s.Key]), strs(r.IPs))
		}
		if r.Changed {
			t.Fatalf("%s reported Changed after restart", s.Key)
		}
	}
	checkInvariants(t, b)
}

func TestRestoreConflictOlderWins(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool(t, "a", "192.0.2.0/24")})
	older := RestoreItem{Service: svc("default", "zz-old"), Current: ips("192.0.2.5"), Created: time.Unix(100, 0)}
	newer := RestoreItem{Service: svc("default", "aa-new"), Current: ips("192.0.2.5"), Created: time.Unix(200, 0)}
	sharers := []RestoreItem{
		{Service: svc("x", "s1", withShare("k"), withPorts(Port{"TCP", 1})), Current: ips("192.0.2.7"), Created: time.Unix(1, 0)},
		{Service: svc("x", "s2", withShare("k"), withPorts(Port{"TCP", 2})), Current: ips("192.0.2.7"), Created: time.Unix(1, 0)},
	}
	cs := a.Restore(append([]RestoreItem{newer, older}, sharers...))
	if len(cs) != 1 {
		t.Fatalf("conflicts = %v, want exactly one", cs)
	}
	c := cs[0]
	if c.Loser != newer.Service.Key || c.Winner != older.Service.Key || c.Address != netip.MustParseAddr("192.0.2.5") {
		t.Fatalf("conflict = %+v, want loser default/aa-new, winner default/zz-old", c)
	}
	if !strings.Contains(c.Err.Error(), "address 192.0.2.5 is held by default/zz-old") {
		t.Fatalf("conflict message = %q", c.Err)
	}
	if got := owners(a, netip.MustParseAddr("192.0.2.7")); len(got) != 2 {
		t.Fatalf("shareable address lost a holder: %v", got)
	}
	// The loser gets a fresh address on its next Assign.
	r := mustAssign(t, a, newer.Service, "192.0.2.5")
	if strs(r.IPs) != "192.0.2.0" || !r.Changed {
		t.Fatalf("loser got %s (changed %v), want 192.0.2.0", strs(r.IPs), r.Changed)
	}
	checkInvariants(t, a)
}

func TestShrunkPoolKeepsAddressesAndWarns(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool(t, "a", "192.0.2.0/24"), pool(t, "b", "198.51.100.0/24")})
	web := svc("default", "web", withIPs("192.0.2.200"))
	api := svc("default", "api", withPool("b"))
	mustAssign(t, a, web)
	mustAssign(t, a, api)
	ws := a.SetPools([]Pool{pool(t, "a", "192.0.2.0/25")})
	if len(ws) != 2 || ws[0].Service != api.Key || ws[1].Service != web.Key {
		t.Fatalf("warnings = %+v, want api and web", ws)
	}
	if !strings.Contains(ws[1].Msg, "address 192.0.2.200 of default/web is outside every IPPool; it is kept") {
		t.Fatalf("warning = %q", ws[1].Msg)
	}
	// Reconciling again keeps the address (requested address held already).
	r := mustAssign(t, a, web, "192.0.2.200")
	if strs(r.IPs) != "192.0.2.200" || r.Changed || r.Pools[0] != "" {
		t.Fatalf("web = %s pools %v changed %v", strs(r.IPs), r.Pools, r.Changed)
	}
	// api asks for the removed pool: error, and it keeps its address.
	_, err := a.Assign(api, ips("198.51.100.0"))
	if err != nil {
		t.Fatalf("api with removed pool: %v", err)
	}
	if got := strs(a.Assigned(api.Key)); got != "198.51.100.0" {
		t.Fatalf("api address = %s after its pool was removed", got)
	}
	// Nobody else can take an address that is still held outside the pools.
	a.SetPools([]Pool{pool(t, "a", "192.0.2.0/24")})
	_, err = a.Assign(svc("other", "x", withIPs("192.0.2.200")), nil)
	wantErr(t, err, ReasonHeldBy, "held by default/web")
}

func TestReleaseAndSharedRelease(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool(t, "a", "192.0.2.0/30")})
	s1 := svc("default", "s1", withShare("k"), withPorts(Port{"TCP", 1}))
	s2 := svc("default", "s2", withShare("k"), withPorts(Port{"TCP", 2}))
	r1, r2 := mustAssign(t, a, s1), mustAssign(t, a, s2)
	if !slices.Equal(r1.IPs, r2.IPs) {
		t.Fatalf("sharing group split: %s vs %s", strs(r1.IPs), strs(r2.IPs))
	}
	a.Release(s1.Key)
	if got := owners(a, r1.IPs[0]); !slices.Equal(got, []ServiceKey{s2.Key}) {
		t.Fatalf("after releasing s1, owner = %v", got)
	}
	a.Release(s2.Key)
	if got := owners(a, r1.IPs[0]); got != nil {
		t.Fatalf("after releasing both, owner = %v", got)
	}
	a.Release(ServiceKey{"none", "none"}) // no-op
	if r := mustAssign(t, a, svc("default", "s3")); strs(r.IPs) != "192.0.2.0" {
		t.Fatalf("released address not reused: %s", strs(r.IPs))
	}
	checkInvariants(t, a)
}

func TestUsage(t *testing.T) {
	a := New()
	p := pool(t, "a", "192.0.2.0/24", "2001:db8::/64")
	p.AvoidBuggyIPs = true
	a.SetPools([]Pool{p, pool(t, "b", "198.51.100.0/30")})
	for i := 0; i < 3; i++ {
		mustAssign(t, a, svc("default", "s"+string(rune('a'+i)), withFams(RequireDualStack, IPv4, IPv6)))
	}
	mustAssign(t, a, svc("default", "b1", withPool("b")))
	u := a.Usage()
	if len(u) != 2 || u[0].Name != "a" || u[1].Name != "b" {
		t.Fatalf("usage = %+v", u)
	}
	if g := u[0].IPv4; g.Total.String() != "254" || g.Used != 3 || g.Free.String() != "251" {
		t.Fatalf("a IPv4 = %s/%d/%s, want 254/3/251", g.Total, g.Used, g.Free)
	}
	if g := u[0].IPv6; g.Total.String() != "18446744073709551616" || g.Used != 3 || g.Free.String() != "18446744073709551613" {
		t.Fatalf("a IPv6 = %s/%d/%s", g.Total, g.Used, g.Free)
	}
	if u[1].IPv6 != nil || u[1].IPv4.Total.String() != "4" || u[1].IPv4.Used != 1 {
		t.Fatalf("b = %+v", u[1].IPv4)
	}
	v4, v6 := u[0].APIStatus()
	if *v4 != (v1alpha1.FamilyUsage{Total: "254", Used: 3, Free: "251"}) || v6.Free != "18446744073709551613" {
		t.Fatalf("APIStatus = %+v %+v", v4, v6)
	}
	if _, v6 := u[1].APIStatus(); v6 != nil {
		t.Fatalf("APIStatus for a pool without IPv6 = %+v", v6)
	}
}

func TestOverlaps(t *testing.T) {
	got := Overlaps([]Pool{
		pool(t, "a", "192.0.2.0/24"),
		pool(t, "b", "192.0.2.128-192.0.2.130"),
		pool(t, "c", "198.51.100.0/24", "2001:db8::/64"),
		pool(t, "d", "2001:db8::ffff-2001:db8::1:0"),
		pool(t, "e", "192.0.3.0/24"), // adjacent to a, not overlapping
		pool(t, "f", "0.0.0.0-192.0.2.0"),
	})
	want := map[string][]string{"a": {"b", "f"}, "b": {"a"}, "f": {"a"}, "c": {"d"}, "d": {"c"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestPoolFromAPI(t *testing.T) {
	no := false
	p, err := PoolFromAPI(&v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: v1alpha1.IPPoolSpec{
			Addresses:     []string{"192.0.2.0/24", "2001:db8::/120"},
			AutoAssign:    &no,
			AvoidBuggyIPs: true,
			AllocateTo: &v1alpha1.AllocateTo{
				Namespaces:        []string{"a"},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}},
				Priority:          7,
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.AutoAssign || !p.AvoidBuggyIPs || p.Priority != 7 || !p.Usable || len(p.Ranges) != 2 ||
		p.ServiceSelector != nil || p.NamespaceSelector.String() != "env=prod" {
		t.Fatalf("pool = %+v", p)
	}
	def, err := PoolFromAPI(&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "d"}, Spec: v1alpha1.IPPoolSpec{Addresses: []string{"192.0.2.0/24"}}})
	if err != nil || !def.AutoAssign {
		t.Fatalf("default autoAssign: %+v %v", def, err)
	}
	_, err = PoolFromAPI(&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: v1alpha1.IPPoolSpec{Addresses: []string{"192.0.2.1/24"}}})
	if err == nil || !strings.Contains(err.Error(), "IPPool bad: spec.addresses[0]") {
		t.Fatalf("err = %v", err)
	}
	_, err = PoolFromAPI(&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "sel"}, Spec: v1alpha1.IPPoolSpec{
		Addresses:  []string{"192.0.2.0/24"},
		AllocateTo: &v1alpha1.AllocateTo{ServiceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}},
	}})
	if err == nil || !strings.Contains(err.Error(), "spec.allocateTo.serviceSelector") {
		t.Fatalf("err = %v", err)
	}
}

// TestRandomOperationsKeepInvariants runs long random sequences of Assign,
// Release and pool changes over small pools (so addresses run out and
// sharing matters) and checks after every step that no address is held by
// two Services that may not share it, that lowest-free picks match a brute
// force search, and that failures change nothing.
func TestRandomOperationsKeepInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	poolSets := [][]Pool{
		{pool(t, "a", "192.0.2.0/29", "2001:db8::/125"), pool(t, "b", "192.0.2.8/30")},
		{pool(t, "a", "192.0.2.0/30", "2001:db8::/126")},
		{pool(t, "a", "192.0.2.254-192.0.3.3"), pool(t, "c", "2001:db8:1::/126")},
	}
	poolSets[2][0].AvoidBuggyIPs = true
	a := New()
	a.SetPools(poolSets[0])
	for step := 0; step < 5000; step++ {
		key := ServiceKey{"ns" + string(rune('0'+rng.IntN(2))), "s" + string(rune('0'+rng.IntN(12)))}
		switch op := rng.IntN(10); {
		case op < 6:
			s := Service{Key: key, Ports: []Port{{"TCP", int32(rng.IntN(3))}}}
			if rng.IntN(2) == 0 {
				s.SharingKey = "k" + string(rune('0'+rng.IntN(2)))
			}
			if rng.IntN(4) == 0 {
				s.ExternalTrafficPolicy = "Local"
				s.Selector = map[string]string{"app": string(rune('0' + rng.IntN(2)))}
			}
			switch rng.IntN(4) {
			case 0:
				s.IPFamilyPolicy, s.IPFamilies = PreferDualStack, []Family{IPv4, IPv6}
			case 1:
				s.IPFamilyPolicy, s.IPFamilies = RequireDualStack, []Family{IPv6, IPv4}
			case 2:
				s.IPFamilyPolicy, s.IPFamilies = SingleStack, []Family{IPv6}
			}
			if rng.IntN(5) == 0 {
				s.RequestedIPs = ips("192.0.2." + string(rune('0'+rng.IntN(10))))
			}
			cur := a.Assigned(key)
			held := a.Held(key)
			r, err := a.Assign(s, cur)
			if err != nil {
				if ReasonOf(err) == "" {
					t.Fatalf("step %d: untyped error %v", step, err)
				}
				// A failed Assign keeps a subset of what the Service had,
				// and reserves the rest until its status drops it.
				for _, ip := range r.IPs {
					if !slices.Contains(cur, ip) {
						t.Fatalf("step %d: failed Assign gave %s a new address %s", step, key, ip)
					}
				}
				if now := a.Held(key); !sameSet(now, held) {
					t.Fatalf("step %d: failed Assign changed what %s reserves: %s, was %s", step, key, strs(now), strs(held))
				}
				break
			}
			for _, ip := range held {
				if !slices.Contains(a.Held(key), ip) {
					t.Fatalf("step %d: Assign freed %s of %s before its status dropped it", step, ip, key)
				}
			}
			// A new address (not kept, not shared, not requested) must be the lowest free one.
			for _, ip := range r.IPs {
				if slices.Contains(held, ip) || len(owners(a, ip)) > 1 || slices.Contains(s.RequestedIPs, ip) {
					continue
				}
				if lower := bruteLowestFree(a, s, ip); lower.IsValid() {
					t.Fatalf("step %d: %s got %s but %s was free and eligible", step, key, ip, lower)
				}
			}
		case op < 7:
			a.Withdraw(key)
		case op < 8:
			if rng.IntN(3) == 0 {
				a.Release(key)
			} else {
				a.Shown(key, a.Assigned(key)) // the status caught up
			}
		default:
			a.SetPools(poolSets[rng.IntN(len(poolSets))])
		}
		checkInvariants(t, a)
	}
}

// bruteLowestFree looks for a free address lower than got in the pool that
// holds got, by walking every address: the reference for lowestFree.
func bruteLowestFree(a *Allocator, s Service, got netip.Addr) netip.Addr {
	p := a.poolOf(got)
	if p == nil {
		return netip.Addr{}
	}
	for _, r := range p.Ranges {
		if r.Family() != familyOf(got) {
			continue
		}
		for x := r.First; x.IsValid() && r.Contains(x) && x.Less(got); x = x.Next() {
			if p.Contains(x) && len(a.holders[x]) == 0 {
				return x
			}
		}
	}
	return netip.Addr{}
}
