package e2e

import (
	"net/netip"
	"testing"
)

// TestServiceAnnotationAliases: Services written for MetalLB or Cilium
// LB-IPAM get what their annotations ask for from pvelb, pvelb's own
// annotation wins over an alias with a Warning naming both, and pools are
// taken in MetalLB's priority order (lower first, none last), all through
// the real apiserver and pvelb-ccm.
func TestServiceAnnotationAliases(t *testing.T) {
	l := lbLab(t, "")
	l.createPool(t, "none", map[string]any{"addresses": []any{"203.0.113.0/28"}})
	l.createPool(t, "second", map[string]any{"addresses": []any{"203.0.113.16/28"}, "allocateTo": map[string]any{"priority": 2}})
	l.createPool(t, "first", map[string]any{"addresses": []any{"203.0.113.32/28"}, "allocateTo": map[string]any{"priority": 1}})
	l.createPool(t, "reserved", map[string]any{"addresses": []any{"203.0.113.64/28"}, "autoAssign": false})
	l.startCCM(t)
	l.waitNodesInitialised(t)

	type want struct{ name, ip string }
	var wants []want
	svc := func(name, ip string, opts ...svcOpt) {
		l.createService(t, "default", name, opts...)
		wants = append(wants, want{name, ip})
	}
	svc("plain", "203.0.113.32") // pool first: priority 1 before 2 before none
	svc("metallb-ips", "203.0.113.70", withAnn("metallb.io/loadBalancerIPs", "203.0.113.70"))
	svc("metallb-old-ips", "203.0.113.71", withAnn("metallb.universe.tf/loadBalancerIPs", "203.0.113.71"))
	svc("cilium-ips", "203.0.113.72", withAnn("lbipam.cilium.io/ips", "203.0.113.72"))
	svc("metallb-pool", "reserved", withAnn("metallb.io/address-pool", "reserved"))
	svc("metallb-old-pool", "reserved", withAnn("metallb.universe.tf/address-pool", "reserved"))
	svc("own-wins", "203.0.113.73", withAnn("pvelb.io/ips", "203.0.113.73"), withAnn("metallb.io/loadBalancerIPs", "203.0.113.74"))
	svc("share-metallb", "203.0.113.75", withAnn("metallb.io/loadBalancerIPs", "203.0.113.75"), withAnn("metallb.io/allow-shared-ip", "k"), withPort(80))
	svc("share-cilium", "203.0.113.75", withAnn("lbipam.cilium.io/ips", "203.0.113.75"), withAnn("lbipam.cilium.io/sharing-key", "k"), withPort(443))
	reserved := netip.MustParsePrefix("203.0.113.64/28")
	for _, w := range wants {
		got := l.waitIPs(t, "default", w.name, 1)
		if w.ip == "reserved" {
			if a, err := netip.ParseAddr(got[0]); err != nil || !reserved.Contains(a) {
				t.Errorf("%s got %v, want an address of pool reserved (%s)", w.name, got, reserved)
			}
		} else if got[0] != w.ip {
			t.Errorf("%s got %v, want %s", w.name, got, w.ip)
		}
	}
	l.waitEvent(t, "default", "own-wins", "AnnotationConflict",
		`metallb.io/loadBalancerIPs "203.0.113.74" is ignored`, `pvelb.io/ips "203.0.113.73" is used`)

}
