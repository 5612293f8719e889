package allocator

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

// --- helpers -------------------------------------------------------------

func pool(t testing.TB, name string, addrs ...string) Pool {
	t.Helper()
	rs, err := ParseRanges(addrs)
	if err != nil {
		t.Fatal(err)
	}
	return Pool{Name: name, Ranges: rs, AutoAssign: true, Usable: true}
}

func ips(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func svc(ns, name string, opts ...func(*Service)) Service {
	s := Service{Key: ServiceKey{ns, name}, Ports: []Port{{"TCP", 80}}}
	for _, o := range opts {
		o(&s)
	}
	return s
}

func withIPs(a ...string) func(*Service)         { return func(s *Service) { s.RequestedIPs = ips(a...) } }
func withPool(p string) func(*Service)           { return func(s *Service) { s.RequestedPool = p } }
func withShare(k string) func(*Service)          { return func(s *Service) { s.SharingKey = k } }
func withPorts(p ...Port) func(*Service)         { return func(s *Service) { s.Ports = p } }
func withETP(e string) func(*Service)            { return func(s *Service) { s.ExternalTrafficPolicy = e } }
func withSel(m map[string]string) func(*Service) { return func(s *Service) { s.Selector = m } }
func withFams(p FamilyPolicy, f ...Family) func(*Service) {
	return func(s *Service) { s.IPFamilyPolicy = p; s.IPFamilies = f }
}
func withLabels(m map[string]string) func(*Service) { return func(s *Service) { s.Labels = m } }
func withNSLabels(m map[string]string) func(*Service) {
	return func(s *Service) { s.NamespaceLabels = m }
}

func strs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func mustAssign(t *testing.T, a *Allocator, s Service, current ...string) Result {
	t.Helper()
	r, err := a.Assign(s, ips(current...))
	if err != nil {
		t.Fatalf("Assign(%s): %v", s.Key, err)
	}
	return r
}

func wantErr(t *testing.T, err error, reason Reason, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s %q", reason, msg)
	}
	if ReasonOf(err) != reason || !strings.Contains(err.Error(), msg) {
		t.Fatalf("error = %s %q, want %s containing %q", ReasonOf(err), err, reason, msg)
	}
}

// --- table: one Assign against a prepared state ----------------------------

func TestAssignTable(t *testing.T) {
	sel := func(s string) labels.Selector {
		x, err := labels.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	type prior struct {
		s   Service
		cur []string
	}
	tests := []struct {
		name    string
		pools   func() []Pool
		before  []prior
		svc     Service
		current []string
		want    string // comma-separated addresses
		reason  Reason
		errMsg  string
	}{
		{
			name:  "lowest free address",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.10-192.0.2.20")} },
			svc:   svc("default", "web"), want: "192.0.2.10",
		},
		{
			name:   "skips used addresses",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.10-192.0.2.20")} },
			before: []prior{{s: svc("default", "x")}, {s: svc("default", "y")}},
			svc:    svc("default", "web"), want: "192.0.2.12",
		},
		{
			name: "a pool with a priority before one without, then name",
			pools: func() []Pool {
				lo, hi, hi2 := pool(t, "a-low", "192.0.2.0/24"), pool(t, "z-high", "198.51.100.0/24"), pool(t, "b-high", "203.0.113.0/24")
				hi.Priority, hi2.Priority = 5, 5
				return []Pool{lo, hi, hi2}
			},
			svc: svc("default", "web"), want: "203.0.113.0",
		},
		{
			name: "lower priority value first (MetalLB's order)",
			pools: func() []Pool {
				two, one, none := pool(t, "a-two", "192.0.2.0/24"), pool(t, "z-one", "198.51.100.0/24"), pool(t, "0-none", "203.0.113.0/24")
				two.Priority, one.Priority = 2, 1
				return []Pool{two, one, none}
			},
			svc: svc("default", "web"), want: "198.51.100.0",
		},
		{
			name: "falls through to next pool when first is full",
			pools: func() []Pool {
				a, b := pool(t, "a", "192.0.2.1/32"), pool(t, "b", "198.51.100.5/32")
				return []Pool{a, b}
			},
			before: []prior{{s: svc("default", "x")}},
			svc:    svc("default", "web"), want: "198.51.100.5",
		},
		{
			name: "avoidBuggyIPs skips .255 and .0",
			pools: func() []Pool {
				p := pool(t, "a", "192.0.2.254-192.0.3.2")
				p.AvoidBuggyIPs = true
				return []Pool{p}
			},
			before: []prior{{s: svc("default", "x")}},
			svc:    svc("default", "web"), want: "192.0.3.1",
		},
		{
			name:   "pool exhausted",
			pools:  func() []Pool { return []Pool{pool(t, "tiny", "192.0.2.1/32")} },
			before: []prior{{s: svc("default", "x")}},
			svc:    svc("default", "web"), reason: ReasonPoolExhausted, errMsg: "no free IPv4 address in pool tiny",
		},
		{
			name:  "no pool of the family",
			pools: func() []Pool { return []Pool{pool(t, "v4", "192.0.2.0/24")} },
			svc:   svc("default", "web", withFams(SingleStack, IPv6)), reason: ReasonNoMatchingPool, errMsg: "no IPPool with IPv6 addresses serves default/web",
		},
		{
			name: "autoAssign off needs the pool annotation",
			pools: func() []Pool {
				p := pool(t, "manual", "192.0.2.0/24")
				p.AutoAssign = false
				return []Pool{p}
			},
			svc: svc("default", "web"), reason: ReasonNoMatchingPool, errMsg: "pool manual has autoAssign off (name it in pvelb.io/pool)",
		},
		{
			name: "autoAssign off pool used when named",
			pools: func() []Pool {
				p := pool(t, "manual", "192.0.2.0/24")
				p.AutoAssign = false
				return []Pool{pool(t, "auto", "198.51.100.0/24"), p}
			},
			svc: svc("default", "web", withPool("manual")), want: "192.0.2.0",
		},
		{
			name:  "named pool does not exist",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			svc:   svc("default", "web", withPool("nope")), reason: ReasonNoMatchingPool, errMsg: "pool nope (annotation pvelb.io/pool) does not exist",
		},
		{
			name:   "named pool does not exist: the message names the annotation read",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			svc:    svc("default", "web", withPool("nope"), func(s *Service) { s.PoolAnnotation = "metallb.io/address-pool" }),
			reason: ReasonNoMatchingPool, errMsg: "pool nope (annotation metallb.io/address-pool) does not exist",
		},
		{
			name: "namespace limit",
			pools: func() []Pool {
				p := pool(t, "team", "192.0.2.0/24")
				p.Namespaces = []string{"team-a"}
				return []Pool{p}
			},
			svc: svc("default", "web"), reason: ReasonNoMatchingPool, errMsg: "pool team is limited to namespaces team-a",
		},
		{
			name: "namespace limit matches",
			pools: func() []Pool {
				p := pool(t, "team", "192.0.2.0/24")
				p.Namespaces = []string{"team-a"}
				return []Pool{p}
			},
			svc: svc("team-a", "web"), want: "192.0.2.0",
		},
		{
			name: "namespace selector",
			pools: func() []Pool {
				p := pool(t, "prod", "192.0.2.0/24")
				p.NamespaceSelector = sel("env=prod")
				p.Priority = 1 // first, were it not for its selector
				q := pool(t, "other", "198.51.100.0/24")
				return []Pool{p, q}
			},
			svc: svc("default", "web", withNSLabels(map[string]string{"env": "dev"})), want: "198.51.100.0",
		},
		{
			name: "service selector",
			pools: func() []Pool {
				p := pool(t, "web", "192.0.2.0/24")
				p.ServiceSelector = sel("app in (web)")
				return []Pool{p}
			},
			svc: svc("default", "db", withLabels(map[string]string{"app": "db"})), reason: ReasonNoMatchingPool, errMsg: "serviceSelector \"app in (web)\" does not match",
		},
		{
			name: "unusable pool gives nothing new",
			pools: func() []Pool {
				p := pool(t, "overlap", "192.0.2.0/24")
				p.Usable = false
				return []Pool{p}
			},
			svc: svc("default", "web"), reason: ReasonNoMatchingPool, errMsg: "pool overlap is refused",
		},
		{
			name:  "requested address",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			svc:   svc("default", "web", withIPs("192.0.2.77")), want: "192.0.2.77",
		},
		{
			name:  "requested address outside every pool",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			svc:   svc("default", "web", withIPs("198.51.100.1")), reason: ReasonNotInAnyPool, errMsg: "requested address 198.51.100.1 is not in any IPPool",
		},
		{
			name:   "requested address held by another service",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withIPs("192.0.2.10"))}},
			svc:    svc("other", "api", withIPs("192.0.2.10")), reason: ReasonHeldBy, errMsg: "address 192.0.2.10 is held by default/web",
		},
		{
			name:   "requested shared address with clashing ports",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withIPs("192.0.2.10"), withShare("k"))}},
			svc:    svc("default", "web2", withIPs("192.0.2.10"), withShare("k")), reason: ReasonSharingRefused,
			errMsg: "address 192.0.2.10 is held by default/web and sharing is refused: ports TCP/80 clash",
		},
		{
			name:   "requested shared address, disjoint ports",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withIPs("192.0.2.10"), withShare("k"))}},
			svc:    svc("default", "dns", withIPs("192.0.2.10"), withShare("k"), withPorts(Port{"UDP", 53}, Port{"TCP", 53})), want: "192.0.2.10",
		},
		{
			name:   "sharing refused: another namespace naming the key",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withIPs("192.0.2.10"), withShare("k"))}},
			svc:    svc("other-ns", "dns", withIPs("192.0.2.10"), withShare("k"), withPorts(Port{"UDP", 53})), reason: ReasonSharingRefused, errMsg: "sharing keys are per namespace",
		},
		{
			name:   "same key in another namespace is another group",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withShare("k"))}},
			svc:    svc("other-ns", "dns", withShare("k"), withPorts(Port{"UDP", 53})), want: "192.0.2.1",
		},
		{
			name:   "same port number, other protocol is no clash",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "tcp", withShare("k"), withPorts(Port{"TCP", 53}))}},
			svc:    svc("default", "udp", withShare("k"), withPorts(Port{"udp", 53})), want: "192.0.2.0",
		},
		{
			name:   "sharing key joins the group's address",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "x")}, {s: svc("default", "web", withShare("k"))}},
			svc:    svc("default", "web-udp", withShare("k"), withPorts(Port{"UDP", 80})), want: "192.0.2.1",
		},
		{
			name:   "sharing with clashing ports gets its own address",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withShare("k"))}},
			svc:    svc("default", "web2", withShare("k")), want: "192.0.2.1",
		},
		{
			name:   "sharing refused: different keys",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withShare("k1"), withIPs("192.0.2.5"))}},
			svc:    svc("default", "api", withShare("k2"), withIPs("192.0.2.5"), withPorts(Port{"TCP", 81})), reason: ReasonSharingRefused, errMsg: "sharing keys differ",
		},
		{
			name:   "sharing refused: externalTrafficPolicy differs",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withShare("k"), withIPs("192.0.2.5"))}},
			svc:    svc("default", "api", withShare("k"), withIPs("192.0.2.5"), withETP("Local"), withPorts(Port{"TCP", 81})), reason: ReasonSharingRefused, errMsg: "externalTrafficPolicy differs (Local vs Cluster)",
		},
		{
			name:   "sharing refused: Local with other selector",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withShare("k"), withIPs("192.0.2.5"), withETP("Local"), withSel(map[string]string{"app": "web"}))}},
			svc:    svc("default", "api", withShare("k"), withIPs("192.0.2.5"), withETP("Local"), withSel(map[string]string{"app": "api"}), withPorts(Port{"TCP", 81})), reason: ReasonSharingRefused, errMsg: "same pod selector",
		},
		{
			name:   "sharing allowed: Local with same selector",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withShare("k"), withIPs("192.0.2.5"), withETP("Local"), withSel(map[string]string{"app": "web"}))}},
			svc:    svc("default", "web-udp", withShare("k"), withIPs("192.0.2.5"), withETP("Local"), withSel(map[string]string{"app": "web"}), withPorts(Port{"UDP", 80})), want: "192.0.2.5",
		},
		{
			name:   "holder without sharing key refuses",
			pools:  func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before: []prior{{s: svc("default", "web", withIPs("192.0.2.5"))}},
			svc:    svc("default", "api", withShare("k"), withIPs("192.0.2.5"), withPorts(Port{"TCP", 81})), reason: ReasonHeldBy, errMsg: "default/web sets no pvelb.io/sharing-key",
		},
		{
			name:  "requested address in the wrong named pool",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24"), pool(t, "b", "198.51.100.0/24")} },
			svc:   svc("default", "web", withIPs("192.0.2.5"), withPool("b")), reason: ReasonRequestConflict, errMsg: "not in pool b",
		},
		{
			name: "requested buggy address is not a pool address",
			pools: func() []Pool {
				p := pool(t, "a", "192.0.2.0/24")
				p.AvoidBuggyIPs = true
				return []Pool{p}
			},
			svc: svc("default", "web", withIPs("192.0.2.255")), reason: ReasonNotInAnyPool, errMsg: "192.0.2.255",
		},
		{
			name:  "requested family not allowed",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24", "2001:db8::/120")} },
			svc:   svc("default", "web", withIPs("2001:db8::5")), reason: ReasonRequestConflict, errMsg: "is IPv6 but the Service's ipFamilies/ipFamilyPolicy allow only IPv4",
		},
		{
			name:  "two requested addresses of one family",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			svc:   svc("default", "web", withFams(PreferDualStack, IPv4, IPv6), withIPs("192.0.2.1", "192.0.2.2")), reason: ReasonRequestConflict, errMsg: "are both IPv4",
		},
		{
			name:  "requested dual-stack pair, returned in ipFamilies order",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24", "2001:db8::/120")} },
			svc:   svc("default", "web", withFams(RequireDualStack, IPv6, IPv4), withIPs("192.0.2.9", "2001:db8::9")), want: "2001:db8::9,192.0.2.9",
		},
		{
			name:  "RequireDualStack with one requested address",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24", "2001:db8::/120")} },
			svc:   svc("default", "web", withFams(RequireDualStack, IPv4, IPv6), withIPs("192.0.2.9")), reason: ReasonRequestConflict, errMsg: "needs one IPv4 and one IPv6",
		},
		{
			name:  "SingleStack IPv6",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24", "2001:db8::/120")} },
			svc:   svc("default", "web", withFams(SingleStack, IPv6)), want: "2001:db8::",
		},
		{
			name:  "dual-stack from one pool, ipFamilies order",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24", "2001:db8::/120")} },
			svc:   svc("default", "web", withFams(PreferDualStack, IPv6, IPv4)), want: "2001:db8::,192.0.2.0",
		},
		{
			name:  "dual-stack from two pools",
			pools: func() []Pool { return []Pool{pool(t, "v4", "192.0.2.0/24"), pool(t, "v6", "2001:db8::/64")} },
			svc:   svc("default", "web", withFams(RequireDualStack, IPv4, IPv6)), want: "192.0.2.0,2001:db8::",
		},
		{
			name:  "PreferDualStack gives what is available",
			pools: func() []Pool { return []Pool{pool(t, "v4", "192.0.2.0/24")} },
			svc:   svc("default", "web", withFams(PreferDualStack, IPv4, IPv6)), want: "192.0.2.0",
		},
		{
			name:  "PreferDualStack secondary only when primary exhausted",
			pools: func() []Pool { return []Pool{pool(t, "v6", "2001:db8::/64")} },
			svc:   svc("default", "web", withFams(PreferDualStack, IPv4, IPv6)), want: "2001:db8::",
		},
		{
			name:  "RequireDualStack without IPv6 pool",
			pools: func() []Pool { return []Pool{pool(t, "v4", "192.0.2.0/24")} },
			svc:   svc("default", "web", withFams(RequireDualStack, IPv4, IPv6)), reason: ReasonFamilyUnavailable, errMsg: "RequireDualStack needs an IPv6 address",
		},
		{
			name:    "current address kept although a lower one is free",
			pools:   func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			svc:     svc("default", "web"),
			current: []string{"192.0.2.200"}, want: "192.0.2.200",
		},
		{
			name:    "current address outside every pool is kept",
			pools:   func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			svc:     svc("default", "web"),
			current: []string{"198.51.100.7"}, want: "198.51.100.7",
		},
		{
			name:    "current address moves when the Service names another pool",
			pools:   func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24"), pool(t, "b", "198.51.100.0/24")} },
			svc:     svc("default", "web", withPool("b")),
			current: []string{"192.0.2.3"}, want: "198.51.100.0",
		},
		{
			name:    "current address replaced by a new request",
			pools:   func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			svc:     svc("default", "web", withIPs("192.0.2.99")),
			current: []string{"192.0.2.3"}, want: "192.0.2.99",
		},
		{
			name:    "current IPv4 kept, IPv6 added on upgrade to dual-stack",
			pools:   func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24", "2001:db8::/120")} },
			svc:     svc("default", "web", withFams(PreferDualStack, IPv4, IPv6)),
			current: []string{"192.0.2.50"}, want: "192.0.2.50,2001:db8::",
		},
		{
			name:    "downgrade to SingleStack drops the other family",
			pools:   func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24", "2001:db8::/120")} },
			svc:     svc("default", "web", withFams(SingleStack, IPv6)),
			current: []string{"192.0.2.50", "2001:db8::50"}, want: "2001:db8::50",
		},
		{
			name:    "current address taken by someone else is not reused",
			pools:   func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			before:  []prior{{s: svc("default", "owner", withIPs("192.0.2.3"))}},
			svc:     svc("default", "web"),
			current: []string{"192.0.2.3"}, want: "192.0.2.0",
		},
		{
			name:  "bad ipFamilyPolicy",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			svc:   svc("default", "web", withFams("Whatever")), reason: ReasonInvalidRequest, errMsg: "spec.ipFamilyPolicy",
		},
		{
			name:  "missing name",
			pools: func() []Pool { return []Pool{pool(t, "a", "192.0.2.0/24")} },
			svc:   Service{Key: ServiceKey{Namespace: "default"}}, reason: ReasonInvalidRequest, errMsg: "namespace and a name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New()
			if ws := a.SetPools(tt.pools()); len(ws) != 0 {
				t.Fatalf("warnings on empty allocator: %v", ws)
			}
			for _, p := range tt.before {
				mustAssign(t, a, p.s, p.cur...)
			}
			before := snapshot(a)
			r, err := a.Assign(tt.svc, ips(tt.current...))
			if tt.reason != "" {
				wantErr(t, err, tt.reason, tt.errMsg)
				if after := snapshot(a); after != before {
					t.Fatalf("failed Assign changed state:\nbefore %s\nafter  %s", before, after)
				}
				return
			}
			if err != nil {
				t.Fatalf("Assign: %v", err)
			}
			if got := strs(r.IPs); got != tt.want {
				t.Fatalf("IPs = %s, want %s", got, tt.want)
			}
			if got := strs(a.Assigned(tt.svc.Key)); got != tt.want {
				t.Fatalf("Assigned = %s, want %s", got, tt.want)
			}
			for _, ip := range r.IPs {
				if !slices.Contains(owners(a, ip), tt.svc.Key) {
					t.Fatalf("Owner(%s) = %v, missing %s", ip, owners(a, ip), tt.svc.Key)
				}
			}
			checkInvariants(t, a)
		})
	}
}

// snapshot renders the whole allocation state, to prove failed calls change nothing.
func snapshot(a *Allocator) string {
	var keys []ServiceKey
	for k := range a.svcs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y ServiceKey) int { return strings.Compare(x.String(), y.String()) })
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s;", k, strs(a.svcs[k].ips))
	}
	fmt.Fprintf(&b, " used=%v", a.used.iv)
	return b.String()
}

// checkInvariants verifies that no address is held by two Services that may
// not share it, and that the indexes agree with each other.
func checkInvariants(t *testing.T, a *Allocator) {
	t.Helper()
	count := 0
	for ip, keys := range a.holders {
		count++
		if !a.used.contains(ip) {
			t.Fatalf("%s held but not in used set", ip)
		}
		for i := range keys {
			h := a.svcs[keys[i]]
			if h == nil || !slices.Contains(h.held(), ip) {
				t.Fatalf("%s lists holder %s that does not hold it", ip, keys[i])
			}
			if !slices.Contains(h.ips, ip) {
				continue // leaving: on its way out of the status, may clash meanwhile
			}
			for j := i + 1; j < len(keys); j++ {
				if o := a.svcs[keys[j]]; !slices.Contains(o.ips, ip) {
					continue
				}
				if why := sharingRefusal(&h.svc, &a.svcs[keys[j]].svc); why != "" {
					t.Fatalf("address %s held by %s and %s which may not share: %s", ip, keys[i], keys[j], why)
				}
			}
		}
	}
	for k, h := range a.svcs {
		if len(h.held()) == 0 {
			t.Fatalf("%s is recorded holding nothing", k)
		}
		for _, ip := range h.held() {
			if !slices.Contains(a.holders[ip], k) {
				t.Fatalf("%s holds %s but is not listed as holder", k, ip)
			}
		}
		for _, ip := range h.leaving {
			if slices.Contains(h.ips, ip) {
				t.Fatalf("%s has %s and is leaving it", k, ip)
			}
		}
	}
	// The sharing index lists exactly the addresses members of each group have.
	for g, set := range a.sharing {
		for ip := range set {
			found := false
			for _, k := range a.holders[ip] {
				h := a.svcs[k]
				found = found || (groupOf(&h.svc) == g && slices.Contains(h.ips, ip))
			}
			if !found {
				t.Fatalf("sharing index lists %s under %s, but no member has it", ip, g)
			}
		}
	}
	for k, h := range a.svcs {
		for _, ip := range h.ips {
			if g := groupOf(&h.svc); g != "" {
				if _, ok := a.sharing[g][ip]; !ok {
					t.Fatalf("%s has %s in group %s, missing from the sharing index", k, ip, g)
				}
			}
		}
	}
	n := 0
	for _, r := range a.used.iv {
		n += int(r.size().Int64())
	}
	if n != count {
		t.Fatalf("used set has %d addresses, holders %d", n, count)
	}
}
