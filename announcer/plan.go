// Package announcer is pvelb-announcer's controller: it watches the Services
// pvelb allocated, their IPPools, BGPPeers, EndpointSlices and Nodes, runs the
// election for every ARP-mode IP with the membership's view of live nodes,
// makes this node's ARP/NDP responders answer exactly the IPs it won, and
// makes its BGP speaker advertise every BGP-mode IP it is eligible for.
package announcer

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/announcer/election"
	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/loadbalancer/eligibility"
	"github.com/pvelb/pvelb/names"
)

// Inputs is one consistent snapshot of what the election depends on.
type Inputs struct {
	Services []*v1.Service
	Pools    map[string]*v1alpha1.IPPool
	Nodes    []*v1.Node
	// ReadyNodes maps "namespace/name" of a Service to the nodes holding a
	// ready endpoint of it (see ReadyNodes).
	ReadyNodes map[string]map[string]bool
	// Alive reports membership liveness.
	Alive func(node string) bool
	// CanServe reports whether node can answer ARP/NDP for addresses of
	// pool ("" for addresses outside every pool): a node that lacks the
	// pool's interface, or has it down, says so in its heartbeats. Nil:
	// every node can.
	CanServe func(node, pool string) bool
}

// Assignment is the outcome for one IP that pvelb allocated.
type Assignment struct {
	IP netip.Addr
	// Pool is the IPPool holding the address now; "" when none does (the
	// pool was deleted or shrunk and pvelb-ccm kept the address).
	Pool string
	// Mode is the pool's announce mode (arp or bgp); arp, the default, when
	// no pool holds the address.
	Mode     v1alpha1.AnnounceMode
	Services []string // namespace/name, sorted
	// Interfaces to answer on; empty means the node's default interface.
	Interfaces []string
	// Candidates are the eligible nodes (alive or not), sorted. In BGP mode
	// every one of them advertises the address.
	Candidates []string
	// Winner is the elected live node in ARP mode, "" when nobody may
	// announce; always "" in BGP mode, where no election takes place.
	Winner string
	// Code and Reason say why nobody may announce the address (no winner
	// in ARP mode, no candidate in BGP mode); both empty otherwise. Code is
	// one of the Reason* constants, Reason a sentence naming the cause.
	Code   string
	Reason string
}

// Why nobody may announce an address (Assignment.Code); also the reason
// label of pvelb_announcer_unannounced_ips.
const (
	// ReasonNoPool is no longer given: an address outside every pool is
	// announced with the default settings. It stays a label value, at zero,
	// for dashboards that name it.
	ReasonNoPool              = "NoPool"
	ReasonInvalidSelector     = "InvalidNodeSelector"
	ReasonSelectorMatchesNone = "NodeSelectorMatchesNone"
	ReasonAllLeaving          = "AllNodesLeaving"
	ReasonAllExcluded         = "AllNodesExcluded"
	ReasonNotAdmitted         = "NotAdmitted"
	ReasonNoReadyEndpoint     = "NoReadyEndpoint"
	ReasonNoInterface         = "NoServingInterface"
	ReasonNoneAlive           = "NoEligibleNodeAlive"
)

// UnannouncedReasons are all the Reason* codes, for a metric that reports
// every one of them (zero included).
var UnannouncedReasons = []string{
	ReasonNoPool, ReasonInvalidSelector, ReasonSelectorMatchesNone, ReasonAllLeaving,
	ReasonAllExcluded, ReasonNotAdmitted, ReasonNoReadyEndpoint, ReasonNoInterface, ReasonNoneAlive,
}

// Announces reports whether node announces the address: the ARP winner, or
// any eligible node in BGP mode.
func (a Assignment) Announces(node string) bool {
	if a.Mode == v1alpha1.AnnounceBGP {
		return slices.Contains(a.Candidates, node)
	}
	return a.Winner != "" && a.Winner == node
}

// Plan computes the assignment of every IP that pvelb allocated. In ARP
// mode the eligible live nodes elect one announcer per IP; in BGP mode every
// eligible node advertises it (ECMP) and liveness is the BGP session itself,
// so membership plays no part. Eligible is eligibility.ForAddress, the rule
// pvelb-ccm admits VIPs in the Proxmox firewall by: selected by the pool, not
// leaving, not excluded, and the VIP admitted by the node's VM (its
// pvelb.io/admitted annotation; a node without it is never eligible, or
// Proxmox could drop its replies). Services sharing an IP share one
// assignment: a node must be eligible for each of them (for Local services
// that means an endpoint of every one, so no shared-IP traffic lands on a
// node that drops it).
//
// An address belongs to the pool that holds it now (allocator.Holding, the
// rule pvelb-ccm records and admits by), not to the one its Service's
// pvelb.io/allocated-pool names: pvelb-ccm keeps addresses when a pool is
// renamed, shrunk or deleted, and rewrites the annotation only afterwards.
// An address no pool holds is announced with the default settings (ARP on
// the default interface, no node selector), exactly where pvelb-ccm keeps
// admitting it, rather than left as an EXTERNAL-IP nobody answers.
func Plan(in Inputs) []Assignment {
	// Parsed once per node, not once per node and IP.
	admitted := make([]eligibility.Admission, len(in.Nodes))
	for i, n := range in.Nodes {
		admitted[i], _ = eligibility.NodeAdmission(n)
	}
	held := holdingPools(in.Pools)

	type ipState struct {
		pool     string
		services []*v1.Service
	}
	byIP := map[netip.Addr]*ipState{}
	for _, svc := range in.Services {
		_, ok := names.AllocatedPool(svc)
		if !ok || svc.Spec.Type != v1.ServiceTypeLoadBalancer {
			continue
		}
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			pool := allocator.Holding(held, ip)
			st := byIP[ip]
			if st == nil {
				st = &ipState{pool: pool}
				byIP[ip] = st
			}
			st.services = append(st.services, svc)
		}
	}

	out := make([]Assignment, 0, len(byIP))
	for ip, st := range byIP {
		a := Assignment{IP: ip, Pool: st.pool}
		for _, s := range st.services {
			a.Services = append(a.Services, s.Namespace+"/"+s.Name)
		}
		slices.Sort(a.Services)
		// every and no name the nodes the pool lets announce, in reasons.
		pool := in.Pools[st.pool]
		every, no := "every node", "no node"
		if pool != nil {
			every, no = "every node IPPool "+pool.Name+" selects", "no node IPPool "+pool.Name+" selects"
		} else {
			pool = &v1alpha1.IPPool{} // no pool holds the address: the defaults
		}
		a.Mode = pool.Spec.Announce.Mode
		if a.Mode == "" {
			a.Mode = v1alpha1.AnnounceARP
		}
		if a.Mode == v1alpha1.AnnounceARP {
			a.Interfaces = slices.Clone(pool.Spec.Announce.Interfaces)
		}
		sel, err := selectorOf(pool.Spec.Announce.NodeSelector)
		if err != nil {
			a.Code, a.Reason = ReasonInvalidSelector, fmt.Sprintf("IPPool %s: spec.announce.nodeSelector: %v", pool.Name, err)
			out = append(out, a)
			continue
		}
		var cands []election.Candidate
		// furthest is the rule that stopped the nodes that came closest:
		// it names the cause when none is eligible.
		furthest := eligibility.Verdict(0)
		cannotServe := 0
		for i, n := range in.Nodes {
			v := eligibility.ForAddress(n, sel, admitted[i], ip)
			furthest = max(furthest, v)
			if v != eligibility.Eligible || !hasReadyEndpoints(n.Name, st.services, in.ReadyNodes) {
				continue
			}
			if a.Mode == v1alpha1.AnnounceARP && in.CanServe != nil && !in.CanServe(n.Name, st.pool) {
				cannotServe++
				continue
			}
			cands = append(cands, election.Candidate{Name: n.Name, Zone: n.Labels[names.LabelZone]})
			a.Candidates = append(a.Candidates, n.Name)
		}
		slices.Sort(a.Candidates)
		switch {
		case furthest <= eligibility.NotSelected:
			a.Code, a.Reason = ReasonSelectorMatchesNone, fmt.Sprintf("the node selector of IPPool %s matches no node", pool.Name)
			if sel == nil {
				a.Reason = "there is no node"
			}
		case furthest == eligibility.Leaving:
			a.Code, a.Reason = ReasonAllLeaving, fmt.Sprintf("%s is being deleted or tainted %s", every, eligibility.ToBeDeletedTaint)
		case furthest == eligibility.Excluded:
			a.Code, a.Reason = ReasonAllExcluded, fmt.Sprintf("%s is leaving or labelled %s", every, v1.LabelNodeExcludeBalancers)
		case furthest == eligibility.NotAdmitted:
			a.Code, a.Reason = ReasonNotAdmitted, fmt.Sprintf("%s has a VM whose Proxmox IP filter admits this address yet "+
				"(pvelb-ccm lists what it admits in the Node annotation %s once the VM's ipfilter-netX sets are written; "+
				"it is missing while pvelb-ccm cannot locate the Node's VM from spec.providerID, and stale while admission fails: "+
				"see FirewallAdmissionFailed and NoEligibleNode Events)", no, names.AnnotationAdmitted)
		case len(cands) == 0 && cannotServe > 0:
			ifs := "its default interface (--interface, or the one holding its InternalIP)"
			if len(a.Interfaces) > 0 {
				ifs = "interface " + strings.Join(a.Interfaces, ", ")
			}
			a.Code, a.Reason = ReasonNoInterface, fmt.Sprintf("%d eligible node(s) cannot answer: each lacks %s, or has it down", cannotServe, ifs)
		case len(cands) == 0:
			a.Code, a.Reason = ReasonNoReadyEndpoint, "no eligible node holds a ready endpoint of every externalTrafficPolicy Local service on this address"
		case a.Mode == v1alpha1.AnnounceBGP:
			// Every candidate advertises; no election.
		default:
			if w, ok := election.Elect(ip, cands, in.Alive); ok {
				a.Winner = w
			} else {
				a.Code, a.Reason = ReasonNoneAlive, "no eligible node is alive"
			}
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Assignment) int { return a.IP.Compare(b.IP) })
	return out
}

// hasReadyEndpoints reports whether node may take the traffic of every
// service: Cluster services always, Local ones only with a ready endpoint on
// the node.
func hasReadyEndpoints(node string, services []*v1.Service, ready map[string]map[string]bool) bool {
	for _, s := range services {
		if s.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal && !ready[s.Namespace+"/"+s.Name][node] {
			return false
		}
	}
	return true
}

// ReadyNodes maps each Service ("namespace/name") to the nodes that hold a
// ready endpoint of it. An endpoint without a Ready condition counts as
// ready, as the EndpointSlice API defines.
func ReadyNodes(slices []*discoveryv1.EndpointSlice) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, es := range slices {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		key := es.Namespace + "/" + svc
		for _, ep := range es.Endpoints {
			if ep.NodeName == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			if out[key] == nil {
				out[key] = map[string]bool{}
			}
			out[key][*ep.NodeName] = true
		}
	}
	return out
}

func selectorOf(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return nil, nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// holdingPools reads the IPPools as pvelb-ccm's allocator does, so that
// allocator.Holding resolves an address to the same pool in both: a pool
// whose spec does not parse holds no address.
func holdingPools(pools map[string]*v1alpha1.IPPool) []allocator.Pool {
	out := make([]allocator.Pool, 0, len(pools))
	for _, ip := range pools {
		p, err := allocator.PoolFromAPI(ip)
		if err != nil {
			p = allocator.Pool{Name: ip.Name}
		}
		out = append(out, p)
	}
	return out
}
