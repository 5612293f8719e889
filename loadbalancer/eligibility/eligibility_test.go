package eligibility

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/names"
)

func TestForPool(t *testing.T) {
	now := metav1.Now()
	lb := labels.SelectorFromSet(labels.Set{"role": "lb"})
	for _, tc := range []struct {
		name string
		node v1.Node
		sel  labels.Selector
		want Verdict
	}{
		{"plain node, no selector", v1.Node{}, nil, Eligible},
		{"selected", v1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"role": "lb"}}}, lb, Eligible},
		{"not selected", v1.Node{}, lb, NotSelected},
		{"being deleted", v1.Node{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}}, nil, Leaving},
		{"autoscaler taint", v1.Node{Spec: v1.NodeSpec{Taints: []v1.Taint{{Key: ToBeDeletedTaint, Effect: v1.TaintEffectNoSchedule}}}}, nil, Leaving},
		{"other taint", v1.Node{Spec: v1.NodeSpec{Taints: []v1.Taint{{Key: "dedicated", Effect: v1.TaintEffectNoSchedule}}}}, nil, Eligible},
		{"exclusion label empty (Talos control plane)", labelled(v1.LabelNodeExcludeBalancers, ""), nil, Excluded},
		{"exclusion label true", labelled(v1.LabelNodeExcludeBalancers, "true"), nil, Excluded},
		{"exclusion label unparsable", labelled(v1.LabelNodeExcludeBalancers, "maybe"), nil, Excluded},
		{"exclusion label false", labelled(v1.LabelNodeExcludeBalancers, "false"), nil, Eligible},
		{"exclusion label False", labelled(v1.LabelNodeExcludeBalancers, "False"), nil, Eligible},
		// The selector is applied first: a node the pool never selects is
		// reported as such, whatever else is true of it.
		{"excluded and not selected", labelled(v1.LabelNodeExcludeBalancers, ""), lb, NotSelected},
		{"leaving and excluded", func() v1.Node {
			n := labelled(v1.LabelNodeExcludeBalancers, "")
			n.DeletionTimestamp = &now
			return n
		}(), nil, Leaving},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ForPool(&tc.node, tc.sel); got != tc.want {
				t.Errorf("ForPool = %v, want %v", got, tc.want)
			}
		})
	}
}

func labelled(k, v string) v1.Node {
	return v1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{k: v}}}
}

func TestForAddress(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.201")
	annotated := func(v string, mod ...func(*v1.Node)) *v1.Node {
		n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{names.AnnotationAdmitted: v}}}
		for _, m := range mod {
			m(n)
		}
		return n
	}
	now := metav1.Now()
	for _, tc := range []struct {
		name string
		node *v1.Node
		want Verdict
	}{
		{"VIP admitted", annotated("192.0.2.201"), Eligible},
		{"VIP inside an admitted range", annotated("192.0.2.200-192.0.2.215"), Eligible},
		{"no filter applies", annotated(Unfiltered), Eligible},
		{"other VIPs admitted", annotated("192.0.2.200,192.0.2.202"), NotAdmitted},
		{"nothing admitted", annotated(""), NotAdmitted},
		{"no annotation: VM not located", &v1.Node{}, NotAdmitted},
		{"malformed annotation is not trusted", annotated("192.0.2.201,bogus"), NotAdmitted},
		{"admitted but leaving", annotated(Unfiltered, func(n *v1.Node) { n.DeletionTimestamp = &now }), Leaving},
		{"admitted but excluded", annotated(Unfiltered, func(n *v1.Node) { n.Labels = map[string]string{v1.LabelNodeExcludeBalancers: "true"} }), Excluded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adm, _ := NodeAdmission(tc.node)
			if got := ForAddress(tc.node, nil, adm, vip); got != tc.want {
				t.Errorf("ForAddress = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestVerdictOrder(t *testing.T) {
	order := []Verdict{NotSelected, Leaving, Excluded, NotAdmitted, Eligible}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Errorf("%v must come before %v: the announcer reports the furthest rule reached", order[i-1], order[i])
		}
	}
	var zero Verdict
	if zero == Eligible {
		t.Error("the zero Verdict must not be Eligible")
	}
}
