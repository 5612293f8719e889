package loadbalancer

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// toBeDeletedTaint is the cluster autoscaler's taint on a Node it is about to
// remove; the service controller leaves such Nodes out, and so does pvelb.
const toBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// excludedFromLB reports whether a Node carries
// node.kubernetes.io/exclude-from-external-load-balancers with a value other
// than "false", exactly as the service controller reads it (an unparsable
// value excludes).
func excludedFromLB(n *v1.Node) bool {
	v, ok := n.Labels[v1.LabelNodeExcludeBalancers]
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err != nil || b
}

func toBeDeleted(n *v1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == toBeDeletedTaint {
			return true
		}
	}
	return false
}

// NodeSelection is the outcome of picking the Nodes that may announce a
// Service's addresses.
type NodeSelection struct {
	// Eligible Nodes, sorted by name.
	Eligible []*v1.Node
	// Excluded are the Nodes labelled exclude-from-external-load-balancers,
	// NotSelected those the pool's announce.nodeSelector leaves out, Deleting
	// those being deleted or drained by the cluster autoscaler (names, sorted).
	Excluded, NotSelected, Deleting []string
}

// SelectNodes picks the Nodes that may announce addresses of a pool with the
// given announce.nodeSelector (nil: every Node). It applies the same node
// predicates as the cloud-provider service controller (not being deleted, not
// labelled exclude-from-external-load-balancers, not tainted by the cluster
// autoscaler) so that class-less Services and pvelb-class Services are treated
// alike. Readiness is deliberately not required, as in the service controller:
// the announcer elects among live nodes itself, and admitting a VIP on a
// NotReady node's VM in advance avoids Proxmox writes on every readiness flap.
func SelectNodes(nodes []*v1.Node, selector labels.Selector) NodeSelection {
	var s NodeSelection
	for _, n := range nodes {
		switch {
		case n.DeletionTimestamp != nil || toBeDeleted(n):
			s.Deleting = append(s.Deleting, n.Name)
		case excludedFromLB(n):
			s.Excluded = append(s.Excluded, n.Name)
		case selector != nil && !selector.Matches(labels.Set(n.Labels)):
			s.NotSelected = append(s.NotSelected, n.Name)
		default:
			s.Eligible = append(s.Eligible, n)
		}
	}
	slices.SortFunc(s.Eligible, func(a, b *v1.Node) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(s.Excluded)
	slices.Sort(s.NotSelected)
	slices.Sort(s.Deleting)
	return s
}

// NoEligibleNodeMessage explains why no Node may announce a pool's addresses
// and how to fix it; empty when some Node is eligible.
func (s NodeSelection) NoEligibleNodeMessage(pool string) string {
	if len(s.Eligible) > 0 {
		return ""
	}
	var parts []string
	if len(s.Excluded) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) carry the label %s (%s); Talos sets it on control-plane nodes by default: "+
			"remove it with `kubectl label node <name> %s-` and, so that it stays removed, a Talos machine-config patch "+
			"`machine: {nodeLabels: {%s: {$patch: delete}}}` (or run workloads on worker nodes)",
			len(s.Excluded), v1.LabelNodeExcludeBalancers, listNames(s.Excluded), v1.LabelNodeExcludeBalancers, v1.LabelNodeExcludeBalancers))
	}
	if len(s.NotSelected) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) do not match IPPool %s's spec.announce.nodeSelector (%s)",
			len(s.NotSelected), pool, listNames(s.NotSelected)))
	}
	if len(s.Deleting) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) are being deleted (%s)", len(s.Deleting), listNames(s.Deleting)))
	}
	if len(parts) == 0 {
		parts = append(parts, "the cluster has no nodes")
	}
	return "no node may announce the address: " + strings.Join(parts, "; ")
}

func listNames(names []string) string {
	const max = 5
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:max], ", ") + fmt.Sprintf(" and %d more", len(names)-max)
}
