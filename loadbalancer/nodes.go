package loadbalancer

import (
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/loadbalancer/eligibility"
)

// NodeSelection is the outcome of picking the Nodes whose VMs admit a pool's
// addresses: the Nodes that may announce them once admitted.
type NodeSelection struct {
	// Eligible Nodes, sorted by name.
	Eligible []*v1.Node
	// The others by the first rule they fail (names, sorted): NotSelected by
	// the pool's announce.nodeSelector, Leaving (being deleted or drained by
	// the cluster autoscaler), Excluded (labelled
	// exclude-from-external-load-balancers), and NoVM: eligible otherwise,
	// but pvelb has not located their VM, so no VM admits the address and the
	// announcer will not elect them.
	NotSelected, Leaving, Excluded, NoVM []string
}

// SelectNodes picks the Nodes whose VMs admit the addresses of a pool with
// the given announce.nodeSelector (nil: every Node), by eligibility.ForPool,
// the rule the announcer applies too, plus, when located is not nil, that
// pvelb located the Node's VM (located is nil when pvelb does not manage the
// firewall, so VMs do not matter). Readiness is deliberately not required,
// as in the service controller: the announcer elects among live nodes itself,
// and admitting a VIP on a NotReady node's VM in advance avoids Proxmox
// writes on every readiness flap.
func SelectNodes(nodes []*v1.Node, selector labels.Selector, located func(*v1.Node) bool) NodeSelection {
	var s NodeSelection
	for _, n := range nodes {
		switch eligibility.ForPool(n, selector) {
		case eligibility.NotSelected:
			s.NotSelected = append(s.NotSelected, n.Name)
		case eligibility.Leaving:
			s.Leaving = append(s.Leaving, n.Name)
		case eligibility.Excluded:
			s.Excluded = append(s.Excluded, n.Name)
		default:
			if located != nil && !located(n) {
				s.NoVM = append(s.NoVM, n.Name)
				continue
			}
			s.Eligible = append(s.Eligible, n)
		}
	}
	slices.SortFunc(s.Eligible, func(a, b *v1.Node) int { return strings.Compare(a.Name, b.Name) })
	for _, names := range [][]string{s.NotSelected, s.Leaving, s.Excluded, s.NoVM} {
		slices.Sort(names)
	}
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
	if len(s.Leaving) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) are being deleted or drained by the cluster autoscaler (%s)", len(s.Leaving), listNames(s.Leaving)))
	}
	if len(s.NoVM) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) have no Proxmox VM pvelb could locate, so no VM admits the address in its IP filter "+
			"and the announcer does not elect them (%s): a Node needs spec.providerID proxmox://<region>/<vmid> naming a QEMU VM "+
			"of a Proxmox cluster in the cloud config, set by pvelb-ccm when it initialises the Node", len(s.NoVM), listNames(s.NoVM)))
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
