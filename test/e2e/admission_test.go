package e2e

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/loadbalancer/eligibility"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/pve"
)

// TestJoiningNodeIsAdmitted: a Node joins on a new VM after pvelb-ccm last
// read Proxmox's VM list, so the VM's providerID is not in it. Without any
// other change, within seconds, pvelb-ccm finds the VM, admits the VIP in its
// ipfilter-net0 and then says so on the Node (pvelb.io/admitted), which is
// what lets the announcer elect it. The annotation never runs ahead of the
// IPSet, and the other Nodes carry what their VMs admit.
func TestJoiningNodeIsAdmitted(t *testing.T) {
	// A long resync: no periodic pass may stand in for finding the new VM.
	l := lbLab(t, `firewall:
  resyncPeriod: 10m
`)
	l.createPool(t, "main", map[string]any{"addresses": []any{"203.0.113.0/28"}})
	l.startCCM(t)
	l.waitNodesInitialised(t)
	l.createService(t, "default", "web")
	vip := l.waitIPs(t, "default", "web", 1)[0]
	l.waitIPSets(t, []string{vip}, []string{vip})
	l.waitAdmitted(t, map[string]string{"talos-cp-1": "", "talos-w-1": vip, "talos-w-2": vip})

	joining := labVM{104, "pve2", "talos-w-3", "6b7d1f4e-0c1a-4a53-9b0e-000000000104", "192.0.2.14"}
	addVM(t, l.PVE, joining)
	l.PVE.SeedIPSet(vmScope(joining), vmSet, pve.IPSetEntry{CIDR: joining.ip, Comment: "node address"})
	start := time.Now()
	l.createNode(t, joining)

	ip := netip.MustParseAddr(vip)
	Eventually(t, 10*time.Second, "the joining node's VM admits the VIP, and its Node says so", func(ctx context.Context) error {
		// Read the Node first: an annotation seen before the IPSet entry
		// would be one written ahead of Proxmox.
		n, err := l.Client.CoreV1().Nodes().Get(ctx, joining.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		adm, annotated := eligibility.NodeAdmission(n)
		ours, _ := l.setEntries(vmScope(joining), vmSet)
		inSet := slices.Contains(ours, vip)
		if annotated && adm.Admits(ip) && !inSet {
			t.Fatalf("%s says %s is admitted (%q) before %s of VM %d holds it (%v)",
				joining.name, vip, n.Annotations[names.AnnotationAdmitted], vmSet, joining.vmid, ours)
		}
		if !inSet {
			return errorf("%s of VM %d: pvelb entries %v, want %s (providerID %q)", vmSet, joining.vmid, ours, vip, n.Spec.ProviderID)
		}
		if !annotated || !adm.Admits(ip) {
			return errorf("%s: %s=%q does not admit %s", joining.name, names.AnnotationAdmitted, n.Annotations[names.AnnotationAdmitted], vip)
		}
		return nil
	})
	t.Logf("the joining node was admitted %v after it registered", time.Since(start).Round(10*time.Millisecond))
	l.waitAdmitted(t, map[string]string{"talos-cp-1": "", "talos-w-1": vip, "talos-w-2": vip, "talos-w-3": vip})
}

// waitAdmitted waits until each named Node's pvelb.io/admitted is exactly
// the given value.
func (l *Lab) waitAdmitted(t *testing.T, want map[string]string) {
	t.Helper()
	Eventually(t, 30*time.Second, "Nodes' "+names.AnnotationAdmitted, func(ctx context.Context) error {
		for name, w := range want {
			n, err := l.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got, ok := n.Annotations[names.AnnotationAdmitted]; !ok || got != w {
				return errorf("%s: %s=%q (present %v), want %q", name, names.AnnotationAdmitted, got, ok, w)
			}
		}
		return nil
	})
}
