package nodelabels

import (
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cloudproviderapi "k8s.io/cloud-provider/api"

	"github.com/pvelb/pvelb/names"
)

func TestChanges(t *testing.T) {
	const zone = v1.LabelTopologyZone
	node := func(labels map[string]string, taints ...v1.Taint) *v1.Node {
		return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: labels}, Spec: v1.NodeSpec{Taints: taints}}
	}
	for _, tc := range []struct {
		name string
		node *v1.Node
		host string
		want map[string]string
	}{
		{"current", node(map[string]string{zone: "pve1", names.LabelProxmoxHost: "pve1"}), "pve1", nil},
		{"migrated", node(map[string]string{zone: "pve1", names.LabelProxmoxHost: "pve1", "other": "x"}), "pve2",
			map[string]string{zone: "pve2", names.LabelProxmoxHost: "pve2"}},
		{"deprecated zone label moves with the zone", node(map[string]string{zone: "pve1", v1.LabelFailureDomainBetaZone: "pve1", names.LabelProxmoxHost: "pve1"}), "pve2",
			map[string]string{zone: "pve2", v1.LabelFailureDomainBetaZone: "pve2", names.LabelProxmoxHost: "pve2"}},
		{"only the host label stale", node(map[string]string{zone: "pve2", names.LabelProxmoxHost: "pve1"}), "pve2",
			map[string]string{names.LabelProxmoxHost: "pve2"}},
		{"labels missing (initialised by another CCM)", node(nil), "pve2",
			map[string]string{zone: "pve2", names.LabelProxmoxHost: "pve2"}},
		{"host name no label value", node(map[string]string{zone: "pve1"}), "pve_2.", nil},
		{"not initialised yet: the node controller's", node(nil, v1.Taint{Key: cloudproviderapi.TaintExternalCloudProvider, Effect: v1.TaintEffectNoSchedule}), "pve2", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Changes(tc.node, tc.host); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Changes = %v; want %v", got, tc.want)
			}
		})
	}
}
