package convert

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// objects parses multi-document YAML manifests, keyed by kind.
func objects(t *testing.T, manifests string) map[string][]unstructured.Unstructured {
	t.Helper()
	out := map[string][]unstructured.Unstructured{}
	for _, doc := range strings.Split(manifests, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		out[u.GetKind()] = append(out[u.GetKind()], u)
	}
	return out
}

func check(t *testing.T, r Result, want string) {
	t.Helper()
	got, err := r.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != strings.TrimSpace(want) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestConvertMetalLB(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{
			name: "L2 pool with every allocation setting",
			in: `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: blue, namespace: metallb-system}
spec:
  addresses: ["192.0.2.0/28", "192.0.2.100 - 192.0.2.110", "2001:db8::5/120", "198.51.100.7-198.51.100.7"]
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 10
    namespaces: [web]
    namespaceSelectors: [{matchLabels: {team: a}}]
    serviceSelectors: [{matchLabels: {tier: front}}, {matchLabels: {tier: back}}]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
spec:
  ipAddressPools: [blue]
  interfaces: [eth1]
  nodeSelectors: [{matchLabels: {edge: "true"}}]
`,
			want: `
# IPAddressPool/blue spec.serviceAllocation.serviceSelectors: 2 selectors, which the source ORs; pvelb takes one: the first is kept, so Services only the others pick no longer get addresses from this pool
---
apiVersion: pvelb.io/v1alpha1
kind: IPPool
metadata:
  name: blue
spec:
  addresses:
  - 192.0.2.0/28
  - 192.0.2.100-192.0.2.110
  - 2001:db8::/120
  - 198.51.100.7/32
  allocateTo:
    namespaceSelector:
      matchLabels:
        team: a
    namespaces:
    - web
    priority: 10
    serviceSelector:
      matchLabels:
        tier: front
  announce:
    interfaces:
    - eth1
    mode: arp
    nodeSelector:
      matchLabels:
        edge: "true"
  autoAssign: false
  avoidBuggyIPs: true
`,
		},
		{
			name: "advertisements by selector and for all pools; a pool nobody advertises",
			in: `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a, labels: {zone: x}}
spec: {addresses: ["192.0.2.0/30"]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: b}
spec: {addresses: ["192.0.2.4/30"]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: by-label}
spec:
  ipAddressPoolSelectors: [{matchLabels: {zone: x}}]
  interfaces: [eth1]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: by-label-2}
spec:
  ipAddressPoolSelectors: [{matchLabels: {zone: x}}]
  interfaces: [eth2]
`,
			want: `
# IPAddressPool/b (no advertisement): MetalLB hands out the pool's addresses without announcing them; pvelb announces every pool, this one by ARP/NDP
---
apiVersion: pvelb.io/v1alpha1
kind: IPPool
metadata:
  name: a
spec:
  addresses:
  - 192.0.2.0/30
  announce:
    interfaces:
    - eth1
    - eth2
    mode: arp
---
apiVersion: pvelb.io/v1alpha1
kind: IPPool
metadata:
  name: b
spec:
  addresses:
  - 192.0.2.4/30
  announce:
    mode: arp
`,
		},
		{
			name: "BGP pool, communities by alias, peers with every setting",
			in: `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: bgp}
spec:
  addresses: ["203.0.113.0/24", "bogus"]
  serviceAllocation: {priority: -3}
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: c, namespace: metallb-system}
spec:
  communities: [{name: vpn, value: "65000:100"}, {name: big, value: "large:4200000000:1:2"}]
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: adv}
spec:
  ipAddressPools: [bgp]
  communities: [vpn, big, "65000:200"]
  localPref: 50
  aggregationLength: 24
  peers: [router]
  nodeSelectors: [{matchLabels: {bgp: "yes"}}]
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: adv-2}
spec:
  ipAddressPools: [bgp]
  localPref: 70
  nodeSelectors: [{matchLabels: {bgp: "also"}}]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: everything}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router, namespace: metallb-system}
spec:
  myASN: 64500
  peerASN: 64501
  peerAddress: 192.0.2.254
  peerPort: 1179
  sourceAddress: 192.0.2.10
  holdTime: 30s
  keepaliveTime: 10s
  nodeSelectors: [{matchLabels: {bgp: "yes"}}]
  passwordSecret: {name: bgp-pw}
  enableGracefulRestart: true
  ebgpMultiHop: true
  bfdProfile: fast
  routerID: 10.0.0.1
  vrf: red
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: ibgp, namespace: metallb-system}
spec:
  myASN: 64500
  dynamicASN: internal
  peerAddress: 2001:db8::1
  password: secret
  ebgpMultiHop: true
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: unnumbered, namespace: metallb-system}
spec: {myASN: 64500, interface: eth0, dynamicASN: external}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: external, namespace: metallb-system}
spec: {myASN: 64500, peerAddress: 192.0.2.253, dynamicASN: external}
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: metallb-system}
spec: {receiveInterval: 100}
`,
			want: `
# IPAddressPool/bgp spec.addresses: "bogus" is not an address range pvelb reads; left out of the pool
# IPAddressPool/bgp spec.serviceAllocation.priority: -3 is not a priority pvelb takes (0 or more); the pool has none, as MetalLB treats it
# L2Advertisement/everything spec: also announces pool bgp, which BGPAdvertisement/adv announces over BGP: pvelb announces a pool one way, over BGP
# BGPAdvertisement/adv spec.aggregationLength: /24 not imported: pvelb advertises each IPv4 address as a /32
# BGPAdvertisement/adv spec.peers: not imported: pvelb advertises pool bgp to every BGPPeer of a node, not only to router
# IPAddressPool/bgp localPref: advertisements set 50, 70: pvelb sets one localPreference per pool, 50
# IPAddressPool/bgp advertisements' nodeSelectors: 2 selectors, which the source ORs; pvelb takes one: the first is kept, so nodes only the others pick no longer announce its addresses
# BGPPeer/router spec.bfdProfile: not imported: pvelb has no BFD; a lost peer is noticed when holdTime (30s) runs out
# BGPPeer/router spec.routerID: not imported: pvelb uses each node's address as its router ID
# BGPPeer/router spec.vrf: not imported: pvelb opens sessions in the default VRF
# BGPPeer/ibgp spec.password: not imported: pvelb reads the password from a Secret only; put it in one and set spec.passwordSecretRef, or the session will not come up
# BGPPeer/ibgp spec.ebgpMultiHop: dropped: an iBGP session is not limited to one hop anyway
# BGPPeer/unnumbered spec.interface: not imported: pvelb peers with an address (BGP unnumbered on "eth0" is not supported); write a BGPPeer with peerAddress
# BGPPeer/external spec.dynamicASN: not imported: pvelb needs the peer's ASN (dynamicASN "external"); write a BGPPeer with peerASN
# BFDProfile/fast spec: not imported: pvelb has no BFD; a lost peer is noticed when the session's holdTime runs out
---
apiVersion: pvelb.io/v1alpha1
kind: IPPool
metadata:
  name: bgp
spec:
  addresses:
  - 203.0.113.0/24
  announce:
    communities:
    - 65000:100
    - "4200000000:1:2"
    - 65000:200
    localPreference: 50
    mode: bgp
    nodeSelector:
      matchLabels:
        bgp: "yes"
---
apiVersion: pvelb.io/v1alpha1
kind: BGPPeer
metadata:
  name: ibgp
spec:
  myASN: 64500
  peerASN: 64500
  peerAddress: 2001:db8::1
---
apiVersion: pvelb.io/v1alpha1
kind: BGPPeer
metadata:
  name: router
spec:
  ebgpMultiHop: 255
  gracefulRestart:
    enabled: true
  holdTime: 30s
  keepaliveTime: 10s
  myASN: 64500
  nodeSelector:
    matchLabels:
      bgp: "yes"
  passwordSecretRef:
    key: password
    name: bgp-pw
    namespace: metallb-system
  peerASN: 64501
  peerAddress: 192.0.2.254
  peerPort: 1179
  sourceAddress: 192.0.2.10
`,
		},
		{
			name: "MetalLB 0.16 fields: service selectors, preferred nodes, AS-path prepend, a session's own ASN",
			in: `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: l2}
spec: {addresses: ["192.0.2.0/30"]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: bgp}
spec: {addresses: ["192.0.2.8/30"]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2}
spec:
  ipAddressPools: [l2]
  serviceSelectors: [{matchLabels: {a: b}}]
  preferredNodeSelectors: [{weight: 10, preference: {matchLabels: {fast: "yes"}}}]
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: bgp}
spec:
  ipAddressPools: [bgp]
  serviceSelectors: [{matchLabels: {a: b}}]
  asPathPrepend: 2
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: own-asn}
spec: {myASN: 64500, localASN: 64600, dynamicASN: internal, peerAddress: 192.0.2.254}
`,
			want: `
# L2Advertisement/l2 spec.serviceSelectors: not imported: pvelb announces every address of pool l2, not only those of the Services selected
# L2Advertisement/l2 spec.preferredNodeSelectors: not imported: pvelb elects the answering node among the eligible ones by its own ranking
# BGPAdvertisement/bgp spec.asPathPrepend: not imported: pvelb does not lengthen the AS path
# BGPAdvertisement/bgp spec.serviceSelectors: not imported: pvelb advertises every address of pool bgp, not only those of the Services selected
---
apiVersion: pvelb.io/v1alpha1
kind: IPPool
metadata:
  name: bgp
spec:
  addresses:
  - 192.0.2.8/30
  announce:
    mode: bgp
---
apiVersion: pvelb.io/v1alpha1
kind: IPPool
metadata:
  name: l2
spec:
  addresses:
  - 192.0.2.0/30
  announce:
    mode: arp
---
apiVersion: pvelb.io/v1alpha1
kind: BGPPeer
metadata:
  name: own-asn
spec:
  myASN: 64600
  peerASN: 64600
  peerAddress: 192.0.2.254
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := FromMetalLBObjects(objects(t, tc.in))
			if err != nil {
				t.Fatal(err)
			}
			check(t, ConvertMetalLB(m), tc.want)
		})
	}
}

func TestFromObjectsNamesTheObject(t *testing.T) {
	_, err := FromMetalLBObjects(objects(t, `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: broken}
spec: {addresses: "not-a-list"}
`))
	if err == nil || !strings.Contains(err.Error(), "IPAddressPool broken") {
		t.Errorf("err = %v, want one naming IPAddressPool broken", err)
	}
}
