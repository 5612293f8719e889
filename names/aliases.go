package names

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Service annotations of MetalLB and Cilium LB-IPAM that pvelb reads as its
// own, so that Services written for them keep working unchanged after a
// switch (docs/install.md, "Switching from MetalLB / Cilium").
const (
	MetalLBLoadBalancerIPs    = "metallb.io/loadBalancerIPs"
	MetalLBLoadBalancerIPsOld = "metallb.universe.tf/loadBalancerIPs"
	MetalLBAddressPool        = "metallb.io/address-pool"
	MetalLBAddressPoolOld     = "metallb.universe.tf/address-pool"
	MetalLBAllowSharedIP      = "metallb.io/allow-shared-ip"
	MetalLBAllowSharedIPOld   = "metallb.universe.tf/allow-shared-ip"
	CiliumIPs                 = "lbipam.cilium.io/ips"
	CiliumIPsOld              = "io.cilium/lb-ipam-ips"
	CiliumSharingKey          = "lbipam.cilium.io/sharing-key"
	CiliumSharingKeyOld       = "io.cilium/lb-ipam-sharing-key"
)

// Aliases lists, for each pvelb annotation that has any, the other load
// balancers' annotations meaning the same, in the order they are read when
// pvelb's own is absent (MetalLB's current form, its older form, Cilium's).
var Aliases = map[string][]string{
	AnnotationIPs:        {MetalLBLoadBalancerIPs, MetalLBLoadBalancerIPsOld, CiliumIPs, CiliumIPsOld},
	AnnotationPool:       {MetalLBAddressPool, MetalLBAddressPoolOld},
	AnnotationSharingKey: {MetalLBAllowSharedIP, MetalLBAllowSharedIPOld, CiliumSharingKey, CiliumSharingKeyOld},
}

// Lookup returns the value of pvelb's annotation name, or when it is absent
// that of the first of its Aliases present; from is the annotation read and
// ok says whether any was present.
func Lookup(annotations map[string]string, name string) (value, from string, ok bool) {
	if v, ok := annotations[name]; ok {
		return v, name, true
	}
	for _, a := range Aliases[name] {
		if v, ok := annotations[a]; ok {
			return v, a, true
		}
	}
	return "", "", false
}

// AliasConflict is an annotation pvelb ignores because the one it reads
// for the same purpose says something else.
type AliasConflict struct {
	Used, UsedValue       string
	Ignored, IgnoredValue string
}

func (c AliasConflict) String() string {
	return fmt.Sprintf("%s %q is ignored: %s %q is used", c.Ignored, c.IgnoredValue, c.Used, c.UsedValue)
}

// AliasConflicts returns the annotations that disagree with the one Lookup
// reads for the same purpose, in a fixed order. Values are compared as
// meant, not as spelt: addresses as a set, other values trimmed.
func AliasConflicts(annotations map[string]string) []AliasConflict {
	var out []AliasConflict
	for _, name := range []string{AnnotationIPs, AnnotationPool, AnnotationSharingKey} {
		used, from, ok := Lookup(annotations, name)
		if !ok {
			continue
		}
		want := normalize(name, used)
		for _, other := range append([]string{name}, Aliases[name]...) {
			v, ok := annotations[other]
			if !ok || other == from || normalize(name, v) == want {
				continue
			}
			out = append(out, AliasConflict{Used: from, UsedValue: used, Ignored: other, IgnoredValue: v})
		}
	}
	return out
}

// normalize is the meaning of an annotation value: for addresses the sorted
// set of canonical forms (a part that does not parse stays as written, so
// that it still differs), otherwise the trimmed value.
func normalize(name, v string) string {
	if name != AnnotationIPs {
		return strings.TrimSpace(v)
	}
	var parts []string
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if a, err := netip.ParseAddr(f); err == nil {
			f = a.String()
		}
		parts = append(parts, f)
	}
	slices.Sort(parts)
	return strings.Join(slices.Compact(parts), ",")
}
