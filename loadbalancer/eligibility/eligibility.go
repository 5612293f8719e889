// Package eligibility is the one rule for which Nodes may announce a VIP,
// shared by pvelb-ccm (which admits the VIP in the Proxmox firewall of those
// Nodes' VMs) and pvelb-announcer (which elects one of them, or advertises
// from all of them over BGP). Two copies of this rule drifted apart once: the
// announcer elected Nodes whose VMs the firewall had never admitted the VIP
// on, and Proxmox dropped their ARP replies without a trace. It is pure.
//
// A Node may announce an address of a pool when, in this order:
//  1. the pool's spec.announce.nodeSelector selects it (nil selects all);
//  2. it is not leaving: not being deleted and not tainted
//     ToBeDeletedByClusterAutoscaler (the service controller's rule);
//  3. it is not labelled node.kubernetes.io/exclude-from-external-load-balancers
//     (read as the service controller reads it);
//  4. its VM admits the address: the Node's pvelb.io/admitted annotation,
//     written by pvelb-ccm after the VM's ipfilter sets were written, holds
//     it (see Admission). pvelb-ccm applies rules 1-3 to decide what to
//     admit; the announcer applies all four.
//
// Readiness is not part of the rule, as in the service controller: the
// announcer elects among live nodes itself.
package eligibility

import (
	"net/netip"
	"strconv"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// ToBeDeletedTaint is the cluster autoscaler's taint on a Node it is about to
// remove.
const ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// Verdict is how far a Node got through the rules: the first rule it fails,
// or Eligible. Verdicts are ordered, so the largest over a set of Nodes says
// which rule stopped the ones that came closest.
type Verdict int

const (
	NotSelected Verdict = iota + 1
	Leaving
	Excluded
	NotAdmitted
	Eligible
)

func (v Verdict) String() string {
	switch v {
	case NotSelected:
		return "NotSelected"
	case Leaving:
		return "Leaving"
	case Excluded:
		return "Excluded"
	case NotAdmitted:
		return "NotAdmitted"
	case Eligible:
		return "Eligible"
	}
	return "Verdict(" + strconv.Itoa(int(v)) + ")"
}

// IsLeaving reports whether the Node is being deleted or drained by the
// cluster autoscaler: a VIP must not land on a node about to disappear.
func IsLeaving(n *v1.Node) bool {
	if n.DeletionTimestamp != nil {
		return true
	}
	for _, t := range n.Spec.Taints {
		if t.Key == ToBeDeletedTaint {
			return true
		}
	}
	return false
}

// IsExcluded reports whether the Node carries
// node.kubernetes.io/exclude-from-external-load-balancers with a value other
// than a false boolean, exactly as the service controller reads it (an empty
// or unparsable value excludes).
func IsExcluded(n *v1.Node) bool {
	v, ok := n.Labels[v1.LabelNodeExcludeBalancers]
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err != nil || b
}

// ForPool applies rules 1-3: whether the Node's VM should admit the addresses
// of a pool with the given node selector (nil: every Node). pvelb-ccm admits
// a pool's VIPs on exactly the VMs of the Nodes this returns Eligible for.
func ForPool(n *v1.Node, selector labels.Selector) Verdict {
	switch {
	case selector != nil && !selector.Matches(labels.Set(n.Labels)):
		return NotSelected
	case IsLeaving(n):
		return Leaving
	case IsExcluded(n):
		return Excluded
	}
	return Eligible
}

// ForAddress applies all four rules: whether the Node may announce ip of a
// pool with the given node selector, admitted being the Node's parsed
// pvelb.io/admitted annotation (see NodeAdmission).
func ForAddress(n *v1.Node, selector labels.Selector, admitted Admission, ip netip.Addr) Verdict {
	if v := ForPool(n, selector); v != Eligible {
		return v
	}
	if !admitted.Admits(ip) {
		return NotAdmitted
	}
	return Eligible
}
