package allocator

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/names"
)

// Family is an IP family, spelled as in Service.spec.ipFamilies.
type Family string

const (
	IPv4 Family = "IPv4"
	IPv6 Family = "IPv6"
)

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// FamilyPolicy mirrors Service.spec.ipFamilyPolicy.
type FamilyPolicy string

const (
	SingleStack      FamilyPolicy = "SingleStack"
	PreferDualStack  FamilyPolicy = "PreferDualStack"
	RequireDualStack FamilyPolicy = "RequireDualStack"
)

// ServiceKey names a Service.
type ServiceKey struct {
	Namespace, Name string
}

func (k ServiceKey) String() string { return k.Namespace + "/" + k.Name }

func (k ServiceKey) less(o ServiceKey) bool {
	if k.Namespace != o.Namespace {
		return k.Namespace < o.Namespace
	}
	return k.Name < o.Name
}

// Port is one (protocol, port) a Service exposes; two Services may share an
// address only if none of these clash.
type Port struct {
	Protocol string // TCP, UDP or SCTP
	Port     int32
}

func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Protocol, p.Port) }

// Service is what the allocator needs to know about a LoadBalancer Service.
type Service struct {
	Key ServiceKey
	// RequestedIPs from pvelb.io/ips (or an alias) or spec.loadBalancerIP (see ParseRequest).
	RequestedIPs []netip.Addr
	// RequestedPool from pvelb.io/pool (or an alias); empty means any auto-assign pool.
	RequestedPool string
	// PoolAnnotation is the annotation RequestedPool was read from, for
	// messages; empty means pvelb.io/pool.
	PoolAnnotation string
	// SharingKey from pvelb.io/sharing-key (or an alias); empty means the address is exclusive.
	SharingKey string
	Ports      []Port
	// ExternalTrafficPolicy is "Cluster" or "Local" (empty counts as Cluster).
	ExternalTrafficPolicy string
	// Selector is the Service's pod selector; Local services sharing an
	// address must select the same pods, or traffic would reach a node
	// without endpoints for one of them.
	Selector        map[string]string
	IPFamilyPolicy  FamilyPolicy
	IPFamilies      []Family
	NamespaceLabels map[string]string
	Labels          map[string]string
}

// poolAnnotation names the annotation RequestedPool came from.
func (s *Service) poolAnnotation() string {
	if s.PoolAnnotation != "" {
		return s.PoolAnnotation
	}
	return names.AnnotationPool
}

// families returns the families the Service wants, primary first.
func (s *Service) families() []Family {
	fams := s.IPFamilies
	if len(fams) == 0 {
		fams = []Family{IPv4}
	}
	if s.IPFamilyPolicy == SingleStack || s.IPFamilyPolicy == "" {
		return fams[:1]
	}
	if len(fams) > 2 {
		fams = fams[:2]
	}
	if len(fams) == 1 && s.IPFamilyPolicy == RequireDualStack {
		// The apiserver lists both families for RequireDualStack; be safe
		// if a caller passes only the primary.
		other := IPv6
		if fams[0] == IPv6 {
			other = IPv4
		}
		fams = []Family{fams[0], other}
	}
	return fams
}

func (s *Service) etp() string {
	if s.ExternalTrafficPolicy == "" {
		return "Cluster"
	}
	return s.ExternalTrafficPolicy
}

// ParseRequest reads the addresses a Service asks for from its annotations
// and spec.loadBalancerIP. pvelb.io/ips (or, without it, the first of its
// aliases present: names.Lookup) is a comma-separated list (one address per
// family for dual-stack). When both are set, loadBalancerIP must be one of
// the annotation's addresses.
func ParseRequest(annotations map[string]string, loadBalancerIP string) ([]netip.Addr, error) {
	var ips []netip.Addr
	v, from, ok := names.Lookup(annotations, names.AnnotationIPs)
	if ok {
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			a, err := parseAddr(f)
			if err != nil {
				return nil, &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("annotation %s: %q is not an IP address", from, f)}
			}
			if slices.Contains(ips, a) {
				continue
			}
			ips = append(ips, a)
		}
		if len(ips) == 0 {
			return nil, &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("annotation %s is empty", from)}
		}
	}
	if loadBalancerIP = strings.TrimSpace(loadBalancerIP); loadBalancerIP != "" {
		a, err := parseAddr(loadBalancerIP)
		if err != nil {
			return nil, &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("spec.loadBalancerIP: %q is not an IP address", loadBalancerIP)}
		}
		if ips != nil && !slices.Contains(ips, a) {
			return nil, &Error{Reason: ReasonRequestConflict, Address: a,
				Msg: fmt.Sprintf("spec.loadBalancerIP %s is not among annotation %s (%s); set one of them", a, from, v)}
		}
		if ips == nil {
			ips = []netip.Addr{a}
		}
	}
	return ips, nil
}

// Pool is an IPPool as the allocator sees it.
type Pool struct {
	Name          string
	Ranges        []Range // as returned by ParseRanges: sorted, merged
	AutoAssign    bool
	AvoidBuggyIPs bool
	// Allocation limits; zero values mean "any".
	Namespaces        []string
	NamespaceSelector labels.Selector
	ServiceSelector   labels.Selector
	Priority          int32
	// Usable is false for pools that are refused (e.g. overlapping another
	// pool): they get no new allocations, but addresses already handed out
	// from them are kept.
	Usable bool
}

// Contains reports whether a is one of the pool's addresses (buggy ones
// excluded when AvoidBuggyIPs is set).
func (p *Pool) Contains(a netip.Addr) bool {
	if p.AvoidBuggyIPs && isBuggy(a) {
		return false
	}
	for _, r := range p.Ranges {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

func (p *Pool) hasFamily(f Family) bool {
	for _, r := range p.Ranges {
		if r.Family() == f {
			return true
		}
	}
	return false
}

// allows checks the allocation limits; the reason says which limit refused.
func (p *Pool) allows(s *Service) (bool, string) {
	if len(p.Namespaces) > 0 && !slices.Contains(p.Namespaces, s.Key.Namespace) {
		return false, fmt.Sprintf("pool %s is limited to namespaces %s", p.Name, strings.Join(p.Namespaces, ","))
	}
	if p.NamespaceSelector != nil && !p.NamespaceSelector.Matches(labels.Set(s.NamespaceLabels)) {
		return false, fmt.Sprintf("pool %s's namespaceSelector %q does not match namespace %s", p.Name, p.NamespaceSelector, s.Key.Namespace)
	}
	if p.ServiceSelector != nil && !p.ServiceSelector.Matches(labels.Set(s.Labels)) {
		return false, fmt.Sprintf("pool %s's serviceSelector %q does not match the Service's labels", p.Name, p.ServiceSelector)
	}
	return true, ""
}

// RestoreItem is one Service with the addresses its status already holds.
type RestoreItem struct {
	Service Service
	Current []netip.Addr
	// Created is the Service's creation timestamp: on a conflict the older
	// Service keeps the address.
	Created time.Time
	// Terminating is set for a Service being deleted: it loses a conflict
	// to any live Service, and its addresses are only reserved until its
	// status stops showing them.
	Terminating bool
}
