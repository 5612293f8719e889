package names

import (
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestLookup(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		of          string
		value, from string
		ok          bool
	}{
		{"none", nil, AnnotationIPs, "", "", false},
		{"pvelb's own", map[string]string{AnnotationIPs: "192.0.2.1"}, AnnotationIPs, "192.0.2.1", AnnotationIPs, true},
		{"own wins over MetalLB", map[string]string{AnnotationIPs: "192.0.2.1", MetalLBLoadBalancerIPs: "192.0.2.2"}, AnnotationIPs, "192.0.2.1", AnnotationIPs, true},
		{"own present but empty still wins", map[string]string{AnnotationIPs: "", MetalLBLoadBalancerIPs: "192.0.2.2"}, AnnotationIPs, "", AnnotationIPs, true},
		{"MetalLB current", map[string]string{MetalLBLoadBalancerIPs: "192.0.2.2"}, AnnotationIPs, "192.0.2.2", MetalLBLoadBalancerIPs, true},
		{"MetalLB old", map[string]string{MetalLBLoadBalancerIPsOld: "192.0.2.3"}, AnnotationIPs, "192.0.2.3", MetalLBLoadBalancerIPsOld, true},
		{"MetalLB current before old", map[string]string{MetalLBLoadBalancerIPsOld: "192.0.2.3", MetalLBLoadBalancerIPs: "192.0.2.2"}, AnnotationIPs, "192.0.2.2", MetalLBLoadBalancerIPs, true},
		{"MetalLB before Cilium", map[string]string{CiliumIPs: "192.0.2.4", MetalLBLoadBalancerIPsOld: "192.0.2.3"}, AnnotationIPs, "192.0.2.3", MetalLBLoadBalancerIPsOld, true},
		{"Cilium", map[string]string{CiliumIPs: "192.0.2.4"}, AnnotationIPs, "192.0.2.4", CiliumIPs, true},
		{"Cilium old", map[string]string{CiliumIPsOld: "192.0.2.5"}, AnnotationIPs, "192.0.2.5", CiliumIPsOld, true},
		{"MetalLB pool", map[string]string{MetalLBAddressPool: "blue"}, AnnotationPool, "blue", MetalLBAddressPool, true},
		{"MetalLB old pool", map[string]string{MetalLBAddressPoolOld: "blue"}, AnnotationPool, "blue", MetalLBAddressPoolOld, true},
		{"Cilium has no pool annotation", map[string]string{"lbipam.cilium.io/pool": "blue"}, AnnotationPool, "", "", false},
		{"MetalLB sharing", map[string]string{MetalLBAllowSharedIP: "k"}, AnnotationSharingKey, "k", MetalLBAllowSharedIP, true},
		{"MetalLB old sharing", map[string]string{MetalLBAllowSharedIPOld: "k"}, AnnotationSharingKey, "k", MetalLBAllowSharedIPOld, true},
		{"Cilium sharing", map[string]string{CiliumSharingKey: "k"}, AnnotationSharingKey, "k", CiliumSharingKey, true},
		{"Cilium old sharing", map[string]string{CiliumSharingKeyOld: "k"}, AnnotationSharingKey, "k", CiliumSharingKeyOld, true},
		{"an alias of another annotation is not read", map[string]string{MetalLBAddressPool: "blue"}, AnnotationSharingKey, "", "", false},
		{"a name without aliases", map[string]string{AnnotationAllocatedPool: "a"}, AnnotationAllocatedPool, "a", AnnotationAllocatedPool, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			value, from, ok := Lookup(tc.annotations, tc.of)
			if value != tc.value || from != tc.from || ok != tc.ok {
				t.Errorf("Lookup(%v, %s) = %q, %q, %v, want %q, %q, %v", tc.annotations, tc.of, value, from, ok, tc.value, tc.from, tc.ok)
			}
		})
	}
}

func TestAliasesReadBySharedReaders(t *testing.T) {
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
		MetalLBAddressPool: " blue ", CiliumSharingKey: " k ",
	}}}
	if got := RequestedPool(svc); got != "blue" {
		t.Errorf("RequestedPool = %q, want blue", got)
	}
	if got := SharingKey(svc); got != "k" {
		t.Errorf("SharingKey = %q, want k", got)
	}
	svc.Annotations[AnnotationSharingKey] = "own"
	if got := SharingKey(svc); got != "own" {
		t.Errorf("SharingKey with pvelb's own set = %q, want own", got)
	}
}

func TestAliasConflicts(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        []string // "ignored=used"
	}{
		{"none", nil, nil},
		{"one alias alone", map[string]string{MetalLBLoadBalancerIPs: "192.0.2.1"}, nil},
		{"agree exactly", map[string]string{AnnotationIPs: "192.0.2.1", MetalLBLoadBalancerIPs: "192.0.2.1"}, nil},
		{"agree as a set of addresses", map[string]string{AnnotationIPs: "2001:db8::1, 192.0.2.1", CiliumIPs: "192.0.2.1,2001:DB8:0::1,192.0.2.1"}, nil},
		{"a 4-in-6 address differs (pvelb refuses it)", map[string]string{AnnotationIPs: "192.0.2.1", CiliumIPs: "::ffff:192.0.2.1"},
			[]string{CiliumIPs + "=" + AnnotationIPs}},
		{"agree after trimming", map[string]string{AnnotationPool: "blue", MetalLBAddressPool: " blue\t"}, nil},
		{"own wins, alias ignored", map[string]string{AnnotationIPs: "192.0.2.1", MetalLBLoadBalancerIPs: "192.0.2.2"},
			[]string{MetalLBLoadBalancerIPs + "=" + AnnotationIPs}},
		{"two aliases disagree", map[string]string{MetalLBAllowSharedIP: "a", CiliumSharingKey: "b"},
			[]string{CiliumSharingKey + "=" + MetalLBAllowSharedIP}},
		{"an unparsable part still differs", map[string]string{AnnotationIPs: "192.0.2.1", CiliumIPs: "192.0.2.1,nope"},
			[]string{CiliumIPs + "=" + AnnotationIPs}},
		{"empty own disagrees with a set alias", map[string]string{AnnotationPool: "", MetalLBAddressPoolOld: "blue"},
			[]string{MetalLBAddressPoolOld + "=" + AnnotationPool}},
		{"several, in a fixed order", map[string]string{
			AnnotationIPs: "192.0.2.1", MetalLBLoadBalancerIPs: "192.0.2.1", CiliumIPsOld: "192.0.2.9",
			MetalLBAddressPool: "red", MetalLBAddressPoolOld: "blue",
			AnnotationSharingKey: "k", MetalLBAllowSharedIPOld: "x", CiliumSharingKey: "y",
		}, []string{
			CiliumIPsOld + "=" + AnnotationIPs,
			MetalLBAddressPoolOld + "=" + MetalLBAddressPool,
			MetalLBAllowSharedIPOld + "=" + AnnotationSharingKey,
			CiliumSharingKey + "=" + AnnotationSharingKey,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range AliasConflicts(tc.annotations) {
				got = append(got, c.Ignored+"="+c.Used)
				if c.UsedValue != tc.annotations[c.Used] || c.IgnoredValue != tc.annotations[c.Ignored] {
					t.Errorf("%+v: values are not the annotations'", c)
				}
				if s := c.String(); !strings.Contains(s, c.Ignored) || !strings.Contains(s, c.Used) || !strings.Contains(s, "ignored") {
					t.Errorf("String() = %q names neither side", s)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("AliasConflicts = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAliasesAreOthers keeps aliases what they are: other projects' names,
// each an alias of one pvelb annotation only.
func TestAliasesAreOthers(t *testing.T) {
	seen := map[string]string{}
	for own, aliases := range Aliases {
		if !strings.HasPrefix(own, "pvelb.io/") {
			t.Errorf("Aliases key %s is not a pvelb annotation", own)
		}
		for _, a := range aliases {
			if strings.HasPrefix(a, "pvelb.io/") {
				t.Errorf("%s: alias %s is pvelb's own", own, a)
			}
			if prev, dup := seen[a]; dup {
				t.Errorf("%s is an alias of both %s and %s", a, prev, own)
			}
			seen[a] = own
		}
	}
}
