package instances

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cloudproviderapi "k8s.io/cloud-provider/api"
	cloudnodeutil "k8s.io/cloud-provider/node/helpers"

	"github.com/pvelb/pvelb/provider/pve"
)

func nodeWith(name, provided string, existing ...v1.NodeAddress) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}}
	if provided != "" {
		n.Annotations[cloudproviderapi.AnnotationAlphaProvidedIPAddr] = provided
	}
	n.Status.Addresses = existing
	return n
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestProvidedNodeIPs(t *testing.T) {
	tests := []struct {
		annotation string
		want       []netip.Addr
		present    bool
		wantErr    string
	}{
		{"", nil, false, ""},
		{"192.0.2.10", addrs("192.0.2.10"), true, ""},
		{"192.0.2.10,2001:db8::10", addrs("192.0.2.10", "2001:db8::10"), true, ""},
		{"192.0.2.10, 2001:db8::10", addrs("192.0.2.10", "2001:db8::10"), true, ""},
		{"192.0.2.010", addrs("192.0.2.10"), true, ""}, // the controller parses sloppily too
		{"::ffff:192.0.2.10", addrs("192.0.2.10"), true, ""},
		{"node-a", nil, true, `"node-a" is not an IP address`},
	}
	for _, tt := range tests {
		n := nodeWith("n1", tt.annotation)
		got, present, err := ProvidedNodeIPs(n)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "n1") {
				t.Errorf("ProvidedNodeIPs(%q) err = %v, want %q naming the node", tt.annotation, err, tt.wantErr)
			}
			continue
		}
		if err != nil || present != tt.present || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ProvidedNodeIPs(%q) = %v, %v, %v; want %v, %v", tt.annotation, got, present, err, tt.want, tt.present)
		}
	}
}

func TestAgentAddresses(t *testing.T) {
	ifaces := []pve.AgentInterface{
		{Name: "lo", Prefixes: pfx("127.0.0.1/8", "::1/128")},
		{Name: "eth0", Prefixes: pfx("192.0.2.10/24", "fe80::1/64", "2001:db8::10/64", "169.254.3.4/16")},
		{Name: "cilium_host", Prefixes: pfx("10.244.0.1/32")},
		{Name: "kube-ipvs0", Prefixes: pfx("203.0.113.50/32")},
		{Name: "flannel.1", Prefixes: pfx("10.244.1.0/32")},
		{Name: "cni0", Prefixes: pfx("10.244.1.1/24")},
		{Name: "vethabc", Prefixes: pfx("10.0.0.9/32")},
		{Name: "lxc123", Prefixes: pfx("10.0.0.8/32")},
		{Name: "docker0", Prefixes: pfx("172.17.0.1/16")},
		{Name: "vxlan.calico", Prefixes: pfx("10.1.0.1/32")},
		{Name: "tunl0", Prefixes: pfx("10.1.0.2/32")},
		{Name: "cali1234", Prefixes: pfx("10.1.0.3/32")},
		{Name: "dummy0", Prefixes: pfx("203.0.113.51/32")},
		{Name: "ens19", Prefixes: pfx("198.51.100.7/24", "::ffff:198.51.100.8/128")},
	}
	got := AgentAddresses(ifaces)
	want := addrs("192.0.2.10", "2001:db8::10", "198.51.100.7", "198.51.100.8")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AgentAddresses = %v, want %v", got, want)
	}
}

func TestNodeAddresses(t *testing.T) {
	internal := func(a string) v1.NodeAddress { return v1.NodeAddress{Type: v1.NodeInternalIP, Address: a} }
	external := func(a string) v1.NodeAddress { return v1.NodeAddress{Type: v1.NodeExternalIP, Address: a} }
	host := func(a string) v1.NodeAddress { return v1.NodeAddress{Type: v1.NodeHostName, Address: a} }
	tests := []struct {
		name  string
		node  *v1.Node
		agent []netip.Addr
		want  []v1.NodeAddress
	}{
		{
			"provided only", nodeWith("w1", "192.0.2.10"), nil,
			[]v1.NodeAddress{internal("192.0.2.10"), host("w1")},
		},
		{
			"dual-stack provided", nodeWith("w1", "192.0.2.10,2001:db8::10"), nil,
			[]v1.NodeAddress{internal("192.0.2.10"), internal("2001:db8::10"), host("w1")},
		},
		{
			"provided first, agent after, deduplicated", nodeWith("w1", "192.0.2.10"), addrs("198.51.100.7", "192.0.2.10"),
			[]v1.NodeAddress{internal("192.0.2.10"), internal("198.51.100.7"), host("w1")},
		},
		{
			"provided replaces earlier status addresses", nodeWith("w1", "192.0.2.10", internal("192.0.2.99")), nil,
			[]v1.NodeAddress{internal("192.0.2.10"), host("w1")},
		},
		{
			"no annotation keeps the kubelet's addresses", nodeWith("w1", "", internal("192.0.2.20"), external("203.0.113.9"), host("w1")), nil,
			[]v1.NodeAddress{internal("192.0.2.20"), external("203.0.113.9"), host("w1")},
		},
		{
			"no annotation with agent", nodeWith("w1", ""), addrs("192.0.2.30"),
			[]v1.NodeAddress{internal("192.0.2.30"), host("w1")},
		},
		{
			"nothing known but the name", nodeWith("w1", ""), nil,
			[]v1.NodeAddress{host("w1")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			provided, have, err := ProvidedNodeIPs(tt.node)
			if err != nil {
				t.Fatal(err)
			}
			got := NodeAddresses(tt.node, provided, have, tt.agent)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("NodeAddresses = %v, want %v", got, tt.want)
			}
			// The cloud node controller's own check must accept the result,
			// or the Node never leaves the uninitialized taint.
			if ann, ok := tt.node.Annotations[cloudproviderapi.AnnotationAlphaProvidedIPAddr]; ok {
				if _, err := cloudnodeutil.GetNodeAddressesFromNodeIP(ann, got); err != nil {
					t.Errorf("cloud node controller rejects %v for %q: %v", got, ann, err)
				}
			}
		})
	}
}
