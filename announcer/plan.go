// Package announcer is pvelb-announcer's controller: it watches the Services
// pvelb allocated, their IPPools, EndpointSlices and Nodes, runs the election
// for every ARP-mode IP with the membership's view of live nodes, and makes
// this node's ARP/NDP responders answer exactly the IPs it won.
package announcer

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/announcer/election"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

const (
	// AnnotationAllocatedPool is written by pvelb-ccm on every Service it
	// gave addresses: the pools they came from, comma-separated.
	AnnotationAllocatedPool = "pvelb.io/allocated-pool"
	// ZoneLabel places a node on a Proxmox host, for zone-diverse failover.
	ZoneLabel = v1.LabelTopologyZone
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
}

// Assignment is the outcome for one ARP-mode IP.
type Assignment struct {
	IP       netip.Addr
	Pool     string
	Services []string // namespace/name, sorted
	// Interfaces to answer on; empty means the node's default interface.
	Interfaces []string
	// Candidates are the eligible nodes (alive or not), sorted.
	Candidates []string
	// Winner is the elected live node, "" when nobody may announce.
	Winner string
	// Reason explains an empty Winner.
	Reason string
}

// Plan computes the assignment of every IP that pvelb allocated from an
// ARP-mode pool. Services sharing an IP share one election: a node must be
// eligible for each of them (for Local services that means an endpoint of
// every one, so no shared-IP traffic lands on a node that drops it).
func Plan(in Inputs) []Assignment {
	type ipState struct {
		pool     string
		services []*v1.Service
	}
	byIP := map[netip.Addr]*ipState{}
	for _, svc := range in.Services {
		poolNames, ok := svc.Annotations[AnnotationAllocatedPool]
		if !ok || svc.Spec.Type != v1.ServiceTypeLoadBalancer {
			continue
		}
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			pool := poolOf(ip, strings.Split(poolNames, ","), in.Pools)
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
		pool := in.Pools[st.pool]
		switch {
		case pool == nil:
			a.Reason = "no IPPool listed in " + AnnotationAllocatedPool + " holds this address"
			out = append(out, a)
			continue
		case pool.Spec.Announce.Mode != "" && pool.Spec.Announce.Mode != v1alpha1.AnnounceARP:
			continue // BGP: every eligible node advertises; not this election
		}
		a.Interfaces = slices.Clone(pool.Spec.Announce.Interfaces)
		sel, err := selectorOf(pool.Spec.Announce.NodeSelector)
		if err != nil {
			a.Reason = fmt.Sprintf("IPPool %s: spec.announce.nodeSelector: %v", pool.Name, err)
			out = append(out, a)
			continue
		}
		var cands []election.Candidate
		for _, n := range in.Nodes {
			if excluded(n) || (sel != nil && !sel.Matches(labels.Set(n.Labels))) {
				continue
			}
			ok := true
			for _, s := range st.services {
				if s.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal &&
					!in.ReadyNodes[s.Namespace+"/"+s.Name][n.Name] {
					ok = false
					break
				}
			}
			if ok {
				cands = append(cands, election.Candidate{Name: n.Name, Zone: n.Labels[ZoneLabel]})
				a.Candidates = append(a.Candidates, n.Name)
			}
		}
		slices.Sort(a.Candidates)
		if len(cands) == 0 {
			a.Reason = "no eligible node (node selector, exclusion label, or no ready endpoint for externalTrafficPolicy Local)"
		} else if w, ok := election.Elect(ip, cands, in.Alive); ok {
			a.Winner = w
		} else {
			a.Reason = "no eligible node is alive"
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Assignment) int { return a.IP.Compare(b.IP) })
	return out
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

// excluded reads node.kubernetes.io/exclude-from-external-load-balancers as
// the service controller does: present with any value but a false boolean.
func excluded(n *v1.Node) bool {
	v, ok := n.Labels[v1.LabelNodeExcludeBalancers]
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err != nil || b
}

func selectorOf(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return nil, nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// poolOf returns the listed pool whose spec.addresses holds ip.
func poolOf(ip netip.Addr, names []string, pools map[string]*v1alpha1.IPPool) string {
	for _, name := range names {
		p := pools[strings.TrimSpace(name)]
		if p == nil {
			continue
		}
		for _, a := range p.Spec.Addresses {
			if addressesContain(a, ip) {
				return p.Name
			}
		}
	}
	return ""
}

// addressesContain reads one spec.addresses entry: a CIDR or "first-last".
func addressesContain(entry string, ip netip.Addr) bool {
	if first, last, ok := strings.Cut(entry, "-"); ok {
		f, err1 := netip.ParseAddr(strings.TrimSpace(first))
		l, err2 := netip.ParseAddr(strings.TrimSpace(last))
		return err1 == nil && err2 == nil && f.Is4() == ip.Is4() && f.Compare(ip) <= 0 && ip.Compare(l) <= 0
	}
	p, err := netip.ParsePrefix(entry)
	return err == nil && p.Contains(ip)
}
