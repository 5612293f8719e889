package convert

import (
	"net/netip"
	"testing"
)

func TestConvertCilium(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{
			name: "L2: pools with blocks, ranges, reserved first and last, selectors; one policy",
			in: `
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: blue}
spec:
  allowFirstLastIPs: "No"
  blocks:
  - cidr: 192.0.2.0/24
  - cidr: 192.0.2.254/31
  - cidr: 2001:db8::/120
  - start: 198.51.100.10
    stop: 198.51.100.20
  - start: 198.51.100.30
  serviceSelector:
    matchLabels: {io.kubernetes.service.namespace: web, tier: front, io.kubernetes.service.name: shop}
---
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: old}
spec:
  disabled: true
  cidrs: [{cidr: 203.0.113.0/28}]
  serviceSelector:
    matchExpressions: [{key: io.kubernetes.service.namespace, operator: In, values: [a, b]}, {key: env, operator: Exists}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: l2}
spec:
  loadBalancerIPs: true
  interfaces: ["^eth1$", "eth2", "^enp[0-9]+s0$"]
  nodeSelector: {matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]}
  serviceSelector: {matchLabels: {announce: "yes"}}
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: external-only}
spec:
  externalIPs: true
`,
			want: `
# CiliumLoadBalancerIPPool/blue spec.serviceSelector: io.kubernetes.service.name=shop not imported: pvelb selects Services by their labels, not their name; name the pool in the Service's pvelb.io/pool instead
# CiliumL2AnnouncementPolicy/l2 spec.serviceSelector: not imported: pvelb announces every address of pool blue, not only those of the Services selected
# CiliumL2AnnouncementPolicy/l2 spec.interfaces: "^enp[0-9]+s0$" is a pattern, pvelb takes interface names: not imported; set spec.announce.interfaces of pool blue (without any, the interface of the node's InternalIP answers)
# CiliumLoadBalancerIPPool/old spec.disabled: imported as autoAssign: false: pvelb still gives its addresses to Services that ask for them by annotation
# CiliumL2AnnouncementPolicy/l2 spec.serviceSelector: not imported: pvelb announces every address of pool old, not only those of the Services selected
# CiliumL2AnnouncementPolicy/l2 spec.interfaces: "^enp[0-9]+s0$" is a pattern, pvelb takes interface names: not imported; set spec.announce.interfaces of pool old (without any, the interface of the node's InternalIP answers)
---
apiVersion: pvelb.io/v1alpha1
kind: IPPool
metadata:
  name: blue
spec:
  addresses:
  - 192.0.2.1-192.0.2.254
  - 192.0.2.254/31
  - 2001:db8::1-2001:db8::fe
  - 198.51.100.10-198.51.100.20
  - 198.51.100.30/32
  allocateTo:
    namespaces:
    - web
    serviceSelector:
      matchLabels:
        tier: front
  announce:
    interfaces:
    - eth1
    - eth2
    mode: arp
    nodeSelector:
      matchExpressions:
      - key: node-role.kubernetes.io/control-plane
        operator: DoesNotExist
---
apiVersion: pvelb.io/v1alpha1
kind: IPPool
metadata:
  name: old
spec:
  addresses:
  - 203.0.113.0/28
  allocateTo:
    namespaces:
    - a
    - b
    serviceSelector:
      matchExpressions:
      - key: env
        operator: Exists
  announce:
    interfaces:
    - eth1
    - eth2
    mode: arp
    nodeSelector:
      matchExpressions:
      - key: node-role.kubernetes.io/control-plane
        operator: DoesNotExist
  autoAssign: false
`,
		},
		{
			name: "BGP control plane: cluster config, peer config, advertisement",
			in: `
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: bgp}
spec:
  blocks: [{cidr: 203.0.113.0/24}]
---
apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata: {name: tor}
spec:
  nodeSelector: {matchLabels: {rack: r1}}
  bgpInstances:
  - name: main
    localASN: 64512
    peers:
    - name: router-a
      peerASN: 64513
      peerAddress: 192.0.2.1
      peerConfigRef: {name: fast}
    - name: router-b
      peerASN: 64512
      peerAddress: 2001:db8::1
      peerConfigRef: {name: missing}
    - name: discovered
      peerASN: 64513
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {name: fast}
spec:
  transport: {peerPort: 1179}
  timers: {holdTimeSeconds: 9, keepAliveTimeSeconds: 3}
  authSecretRef: bgp-auth
  gracefulRestart: {enabled: true, restartTimeSeconds: 60}
  ebgpMultihop: 3
---
apiVersion: cilium.io/v2
kind: CiliumBGPAdvertisement
metadata: {name: lb}
spec:
  advertisements:
  - advertisementType: PodCIDR
  - advertisementType: Service
    service: {addresses: [ClusterIP, LoadBalancerIP]}
    selector: {matchExpressions: [{key: somekey, operator: NotIn, values: [never]}]}
    attributes:
      communities: {standard: ["65000:100"], wellKnown: [no-export], large: ["4200000000:1:2"]}
      localPreference: 200
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: l2}
spec: {loadBalancerIPs: true}
`,
			want: `
# CiliumBGPAdvertisement/lb spec.advertisements[1].selector: not imported: pvelb advertises every address of a BGP pool, not only those of the Services selected
# CiliumL2AnnouncementPolicy/l2 spec: not imported: LoadBalancer addresses are advertised over BGP (CiliumBGPAdvertisement/lb), and pvelb announces a pool one way
# CiliumBGPPeerConfig/fast spec.authSecretRef: imported as Secret kube-system/bgp-auth: Cilium reads it from its bgp-secrets-namespace; change passwordSecretRef.namespace of BGPPeer tor-router-a if yours is not kube-system
# CiliumBGPClusterConfig/tor spec.bgpInstances[0].peers[1].peerConfigRef: CiliumBGPPeerConfig missing does not exist: peer router-b imported with pvelb's defaults
# CiliumBGPClusterConfig/tor spec.bgpInstances[0].peers[2]: peer discovered not imported: pvelb needs localASN, peerASN and peerAddress (auto-discovered peers are not supported)
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
    - no-export
    - "4200000000:1:2"
    localPreference: 200
    mode: bgp
---
apiVersion: pvelb.io/v1alpha1
kind: BGPPeer
metadata:
  name: tor-router-a
spec:
  ebgpMultiHop: 3
  gracefulRestart:
    enabled: true
    restartTime: 1m0s
  holdTime: 9s
  keepaliveTime: 3s
  myASN: 64512
  nodeSelector:
    matchLabels:
      rack: r1
  passwordSecretRef:
    key: password
    name: bgp-auth
    namespace: kube-system
  peerASN: 64513
  peerAddress: 192.0.2.1
  peerPort: 1179
---
apiVersion: pvelb.io/v1alpha1
kind: BGPPeer
metadata:
  name: tor-router-b
spec:
  myASN: 64512
  nodeSelector:
    matchLabels:
      rack: r1
  peerASN: 64512
  peerAddress: 2001:db8::1
`,
		},
		{
			name: "legacy CiliumBGPPeeringPolicy",
			in: `
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: lb}
spec: {blocks: [{cidr: 203.0.113.0/28}]}
---
apiVersion: cilium.io/v2alpha1
kind: CiliumBGPPeeringPolicy
metadata: {name: rack0}
spec:
  nodeSelector: {matchLabels: {rack: rack0}}
  virtualRouters:
  - localASN: 64512
    exportPodCIDR: true
    serviceSelector: {matchExpressions: [{key: somekey, operator: NotIn, values: [never-used-value]}]}
    neighbors:
    - peerAddress: 192.0.2.1/32
      peerASN: 64513
      eBGPMultihopTTL: 4
      holdTimeSeconds: 12
      authSecretRef: rack0-pw
      gracefulRestart: {enabled: true}
    - peerAddress: 2001:db8::1/128
      peerASN: 64512
      peerPort: 1790
    - peerAddress: 192.0.2.0/24
      peerASN: 64513
  - localASN: 64600
    serviceSelector: {matchLabels: {bgp: "yes"}}
    neighbors: []
`,
			want: `
# CiliumBGPPeeringPolicy/rack0 spec.virtualRouters[1].serviceSelector: not imported: pvelb advertises every address of a BGP pool, not only those of the Services selected
# CiliumBGPPeeringPolicy/rack0 spec.virtualRouters[0].neighbors[0].authSecretRef: imported as Secret kube-system/rack0-pw: Cilium reads it from its bgp-secrets-namespace; change passwordSecretRef.namespace of BGPPeer rack0-192-0-2-1 if yours is not kube-system
# CiliumBGPPeeringPolicy/rack0 spec.virtualRouters[0].neighbors[2].peerAddress: "192.0.2.0/24" not imported: pvelb needs one peer address (a /32 or /128)
---
apiVersion: pvelb.io/v1alpha1
kind: IPPool
metadata:
  name: lb
spec:
  addresses:
  - 203.0.113.0/28
  announce:
    mode: bgp
---
apiVersion: pvelb.io/v1alpha1
kind: BGPPeer
metadata:
  name: rack0-192-0-2-1
spec:
  ebgpMultiHop: 4
  gracefulRestart:
    enabled: true
  holdTime: 12s
  myASN: 64512
  nodeSelector:
    matchLabels:
      rack: rack0
  passwordSecretRef:
    key: password
    name: rack0-pw
    namespace: kube-system
  peerASN: 64513
  peerAddress: 192.0.2.1
---
apiVersion: pvelb.io/v1alpha1
kind: BGPPeer
metadata:
  name: rack0-2001-db8--1
spec:
  myASN: 64512
  nodeSelector:
    matchLabels:
      rack: rack0
  peerASN: 64512
  peerAddress: 2001:db8::1
  peerPort: 1790
`,
		},
		{
			name: "a pool nothing announces",
			in: `
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: quiet}
spec: {blocks: [{cidr: 192.0.2.8/29}, {start: 192.0.2.20, stop: 192.0.2.10}]}
`,
			want: `
# CiliumLoadBalancerIPPool/quiet spec.blocks: {CIDR: Start:192.0.2.20 Stop:192.0.2.10} is not an address block pvelb reads; left out of the pool
# CiliumLoadBalancerIPPool/quiet (no announcement): no L2 announcement policy or BGP advertisement announces LoadBalancer IPs, so Cilium does not announce them; pvelb announces every pool, this one by ARP/NDP
---
apiVersion: pvelb.io/v1alpha1
kind: IPPool
metadata:
  name: quiet
spec:
  addresses:
  - 192.0.2.8/29
  announce:
    mode: arp
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromCiliumObjects(objects(t, tc.in))
			if err != nil {
				t.Fatal(err)
			}
			check(t, ConvertCilium(c), tc.want)
		})
	}
}

func TestWithoutFirstLast(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.0/24":   "192.0.2.1-192.0.2.254",
		"192.0.2.0/30":   "192.0.2.1-192.0.2.2",
		"192.0.2.0/31":   "192.0.2.0/31",
		"192.0.2.7/32":   "192.0.2.7/32",
		"2001:db8::/64":  "2001:db8::1-2001:db8::ffff:ffff:ffff:fffe",
		"2001:db8::/127": "2001:db8::/127",
		"10.0.0.0/8":     "10.0.0.1-10.255.255.254",
	} {
		if got := withoutFirstLast(netip.MustParsePrefix(in)); got != want {
			t.Errorf("withoutFirstLast(%s) = %s, want %s", in, got, want)
		}
	}
}
