package convert

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

// Cilium's resources (cilium.io v2alpha1 or v2), in the fields the
// conversion reads: LB-IPAM pools, L2 announcement policies and the BGP
// control plane (v2: cluster configs, peer configs, advertisements).
type Cilium struct {
	Pools          []CiliumPool
	L2             []CiliumL2Policy
	BGPClusters    []CiliumBGPClusterConfig
	BGPPeerConfigs []CiliumBGPPeerConfig
	BGPAdverts     []CiliumBGPAdvertisement
	// PeeringPolicies are the BGP control plane's first API (v2alpha1,
	// deprecated since Cilium 1.16 but common on older clusters).
	PeeringPolicies []CiliumBGPPeeringPolicy
}

// Cilium kinds, as FromCiliumObjects takes them.
const (
	KindCiliumPool             = "CiliumLoadBalancerIPPool"
	KindCiliumL2Policy         = "CiliumL2AnnouncementPolicy"
	KindCiliumBGPClusterConfig = "CiliumBGPClusterConfig"
	KindCiliumBGPPeerConfig    = "CiliumBGPPeerConfig"
	KindCiliumBGPAdvertisement = "CiliumBGPAdvertisement"
	KindCiliumBGPPeeringPolicy = "CiliumBGPPeeringPolicy"
)

// Service labels Cilium's selectors may use for a Service's namespace and
// name, which Services do not carry.
const (
	ciliumServiceNamespace = "io.kubernetes.service.namespace"
	ciliumServiceName      = "io.kubernetes.service.name"
)

type ciliumBlock struct {
	CIDR  string `json:"cidr,omitempty"`
	Start string `json:"start,omitempty"`
	Stop  string `json:"stop,omitempty"`
}

type CiliumPool struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Blocks            []ciliumBlock         `json:"blocks,omitempty"`
		CIDRs             []ciliumBlock         `json:"cidrs,omitempty"` // the older name of blocks
		ServiceSelector   *metav1.LabelSelector `json:"serviceSelector,omitempty"`
		Disabled          bool                  `json:"disabled,omitempty"`
		AllowFirstLastIPs string                `json:"allowFirstLastIPs,omitempty"`
	} `json:"spec"`
}

type CiliumL2Policy struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		NodeSelector    *metav1.LabelSelector `json:"nodeSelector,omitempty"`
		ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
		Interfaces      []string              `json:"interfaces,omitempty"`
		LoadBalancerIPs bool                  `json:"loadBalancerIPs,omitempty"`
	} `json:"spec"`
}

type CiliumBGPClusterConfig struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
		BGPInstances []struct {
			Name     string `json:"name"`
			LocalASN *int64 `json:"localASN,omitempty"`
			Peers    []struct {
				Name          string  `json:"name"`
				PeerAddress   *string `json:"peerAddress,omitempty"`
				PeerASN       *int64  `json:"peerASN,omitempty"`
				PeerConfigRef *struct {
					Name string `json:"name"`
				} `json:"peerConfigRef,omitempty"`
			} `json:"peers,omitempty"`
		} `json:"bgpInstances"`
	} `json:"spec"`
}

type CiliumBGPPeerConfig struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Transport *struct {
			PeerPort *int32 `json:"peerPort,omitempty"`
		} `json:"transport,omitempty"`
		Timers *struct {
			HoldTimeSeconds      *int32 `json:"holdTimeSeconds,omitempty"`
			KeepAliveTimeSeconds *int32 `json:"keepAliveTimeSeconds,omitempty"`
		} `json:"timers,omitempty"`
		AuthSecretRef   *string                `json:"authSecretRef,omitempty"`
		GracefulRestart *ciliumGracefulRestart `json:"gracefulRestart,omitempty"`
		EBGPMultihop    *int32                 `json:"ebgpMultihop,omitempty"`
	} `json:"spec"`
}

type ciliumGracefulRestart struct {
	Enabled            bool   `json:"enabled"`
	RestartTimeSeconds *int32 `json:"restartTimeSeconds,omitempty"`
}

// ciliumPeerSettings are a peer's settings, as a CiliumBGPPeerConfig or a
// legacy policy's neighbor gives them.
type ciliumPeerSettings struct {
	peerPort, holdTime, keepAlive, multihop *int32
	authSecretRef                           *string
	gracefulRestart                         *ciliumGracefulRestart
}

func (pc CiliumBGPPeerConfig) settings() ciliumPeerSettings {
	s := ciliumPeerSettings{authSecretRef: pc.Spec.AuthSecretRef, gracefulRestart: pc.Spec.GracefulRestart, multihop: pc.Spec.EBGPMultihop}
	if t := pc.Spec.Transport; t != nil {
		s.peerPort = t.PeerPort
	}
	if t := pc.Spec.Timers; t != nil {
		s.holdTime, s.keepAlive = t.HoldTimeSeconds, t.KeepAliveTimeSeconds
	}
	return s
}

type CiliumBGPAdvertisement struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Advertisements []struct {
			AdvertisementType string `json:"advertisementType"`
			Service           *struct {
				Addresses []string `json:"addresses,omitempty"`
			} `json:"service,omitempty"`
			Selector   *metav1.LabelSelector `json:"selector,omitempty"`
			Attributes *struct {
				Communities *struct {
					Standard  []string `json:"standard,omitempty"`
					WellKnown []string `json:"wellKnown,omitempty"`
					Large     []string `json:"large,omitempty"`
				} `json:"communities,omitempty"`
				LocalPreference *int64 `json:"localPreference,omitempty"`
			} `json:"attributes,omitempty"`
		} `json:"advertisements"`
	} `json:"spec"`
}

type CiliumBGPPeeringPolicy struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		NodeSelector   *metav1.LabelSelector `json:"nodeSelector,omitempty"`
		VirtualRouters []struct {
			LocalASN              int64                 `json:"localASN"`
			ServiceSelector       *metav1.LabelSelector `json:"serviceSelector,omitempty"`
			ServiceAdvertisements []string              `json:"serviceAdvertisements,omitempty"`
			Neighbors             []struct {
				PeerAddress          string                 `json:"peerAddress"`
				PeerASN              int64                  `json:"peerASN"`
				PeerPort             *int32                 `json:"peerPort,omitempty"`
				AuthSecretRef        *string                `json:"authSecretRef,omitempty"`
				EBGPMultihopTTL      *int32                 `json:"eBGPMultihopTTL,omitempty"`
				HoldTimeSeconds      *int32                 `json:"holdTimeSeconds,omitempty"`
				KeepAliveTimeSeconds *int32                 `json:"keepAliveTimeSeconds,omitempty"`
				GracefulRestart      *ciliumGracefulRestart `json:"gracefulRestart,omitempty"`
			} `json:"neighbors"`
		} `json:"virtualRouters"`
	} `json:"spec"`
}

// FromCiliumObjects decodes Cilium's objects, keyed by kind.
func FromCiliumObjects(objs map[string][]unstructured.Unstructured) (Cilium, error) {
	var c Cilium
	var err error
	if c.Pools, err = decode[CiliumPool](KindCiliumPool, objs[KindCiliumPool]); err != nil {
		return c, err
	}
	if c.L2, err = decode[CiliumL2Policy](KindCiliumL2Policy, objs[KindCiliumL2Policy]); err != nil {
		return c, err
	}
	if c.BGPClusters, err = decode[CiliumBGPClusterConfig](KindCiliumBGPClusterConfig, objs[KindCiliumBGPClusterConfig]); err != nil {
		return c, err
	}
	if c.BGPPeerConfigs, err = decode[CiliumBGPPeerConfig](KindCiliumBGPPeerConfig, objs[KindCiliumBGPPeerConfig]); err != nil {
		return c, err
	}
	if c.BGPAdverts, err = decode[CiliumBGPAdvertisement](KindCiliumBGPAdvertisement, objs[KindCiliumBGPAdvertisement]); err != nil {
		return c, err
	}
	if c.PeeringPolicies, err = decode[CiliumBGPPeeringPolicy](KindCiliumBGPPeeringPolicy, objs[KindCiliumBGPPeeringPolicy]); err != nil {
		return c, err
	}
	return c, nil
}

// ciliumSecretsNamespace is where Cilium's BGP control plane reads peer
// passwords from unless configured otherwise (bgp-secrets-namespace).
const ciliumSecretsNamespace = "kube-system"

// ConvertCilium converts Cilium's configuration.
func ConvertCilium(c Cilium) Result {
	var r Result
	// How LoadBalancer addresses are announced: over BGP when an
	// advertisement of LoadBalancerIP exists, else by ARP/NDP when an L2
	// policy announces LoadBalancer IPs.
	var bgpObj string
	var communities []string
	var localPref *uint32
	for _, a := range c.BGPAdverts {
		obj := KindCiliumBGPAdvertisement + "/" + a.Name
		for i, ad := range a.Spec.Advertisements {
			if ad.AdvertisementType != "Service" || ad.Service == nil || !slices.Contains(ad.Service.Addresses, "LoadBalancerIP") {
				continue
			}
			if bgpObj == "" {
				bgpObj = obj
			}
			field := fmt.Sprintf("spec.advertisements[%d]", i)
			if ad.Selector != nil && !isEmpty(ad.Selector) {
				r.note(obj, field+".selector", "not imported: pvelb advertises every address of a BGP pool, not only those of the Services selected")
			}
			if at := ad.Attributes; at != nil {
				if cs := at.Communities; cs != nil {
					communities = union(communities, cs.Standard...)
					communities = union(communities, cs.WellKnown...)
					communities = union(communities, cs.Large...)
				}
				if lp := at.LocalPreference; lp != nil && localPref == nil && *lp >= 0 && *lp <= 1<<32-1 {
					v := uint32(*lp)
					localPref = &v
				}
			}
		}
	}
	for _, pp := range c.PeeringPolicies {
		obj := KindCiliumBGPPeeringPolicy + "/" + pp.Name
		for i, vr := range pp.Spec.VirtualRouters {
			if vr.ServiceSelector == nil || (len(vr.ServiceAdvertisements) > 0 && !slices.Contains(vr.ServiceAdvertisements, "LoadBalancerIP")) {
				continue
			}
			if bgpObj == "" {
				bgpObj = obj
			}
			if !matchesEverything(vr.ServiceSelector) {
				r.note(obj, fmt.Sprintf("spec.virtualRouters[%d].serviceSelector", i), "not imported: pvelb advertises every address of a BGP pool, not only those of the Services selected")
			}
		}
	}
	var l2 []CiliumL2Policy
	for _, p := range c.L2 {
		if p.Spec.LoadBalancerIPs {
			l2 = append(l2, p)
		}
	}
	if bgpObj != "" {
		for _, p := range l2 {
			r.note(KindCiliumL2Policy+"/"+p.Name, "spec", "not imported: LoadBalancer addresses are advertised over BGP (%s), and pvelb announces a pool one way", bgpObj)
		}
	}
	for _, p := range c.Pools {
		r.Pools = append(r.Pools, r.ciliumPool(p, bgpObj != "", l2, communities, localPref))
	}
	r.Peers = r.ciliumPeers(c)
	sortPools(r.Pools)
	sortPeers(r.Peers)
	return r
}

// matchesEverything recognises the selectors Cilium's documentation uses to
// advertise every Service through a policy: empty, or a NotIn/DoesNotExist
// on a label no Service carries. It cannot know which labels Services
// carry, so it takes any selector made only of NotIn and DoesNotExist
// expressions as meant to match everything.
func matchesEverything(s *metav1.LabelSelector) bool {
	if len(s.MatchLabels) > 0 {
		return false
	}
	for _, e := range s.MatchExpressions {
		if e.Operator != metav1.LabelSelectorOpNotIn && e.Operator != metav1.LabelSelectorOpDoesNotExist {
			return false
		}
	}
	return true
}

func isEmpty(s *metav1.LabelSelector) bool {
	return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

// plainInterface matches a regular expression that can only match one
// interface name (Cilium's interfaces are expressions, pvelb's are names).
var plainInterface = regexp.MustCompile(`^\^?([a-zA-Z0-9_][a-zA-Z0-9_-]*)\$?$`)

func (r *Result) ciliumPool(p CiliumPool, bgp bool, l2 []CiliumL2Policy, communities []string, localPref *uint32) v1alpha1.IPPool {
	obj := KindCiliumPool + "/" + p.Name
	out := newPool(p.Name)
	reserve := p.Spec.AllowFirstLastIPs == "No"
	for _, b := range append(append([]ciliumBlock{}, p.Spec.Blocks...), p.Spec.CIDRs...) {
		var s string
		var ok bool
		if b.CIDR != "" {
			s, ok = cidr(b.CIDR)
			if ok && reserve {
				s = withoutFirstLast(netip.MustParsePrefix(s))
			}
		} else {
			s, ok = addrRange(b.Start, b.Stop)
		}
		if !ok {
			r.note(obj, "spec.blocks", "%+v is not an address block pvelb reads; left out of the pool", b)
			continue
		}
		out.Spec.Addresses = union(out.Spec.Addresses, s)
	}
	if p.Spec.Disabled {
		f := false
		out.Spec.AutoAssign = &f
		r.note(obj, "spec.disabled", "imported as autoAssign: false: pvelb still gives its addresses to Services that ask for them by annotation")
	}
	if sel := p.Spec.ServiceSelector; sel != nil && !isEmpty(sel) {
		to := &v1alpha1.AllocateTo{}
		rest := &metav1.LabelSelector{}
		for _, k := range slices.Sorted(maps.Keys(sel.MatchLabels)) {
			v := sel.MatchLabels[k]
			switch k {
			case ciliumServiceNamespace:
				to.Namespaces = union(to.Namespaces, v)
			case ciliumServiceName:
				r.note(obj, "spec.serviceSelector", "%s=%s not imported: pvelb selects Services by their labels, not their name; name the pool in the Service's pvelb.io/pool instead", k, v)
			default:
				if rest.MatchLabels == nil {
					rest.MatchLabels = map[string]string{}
				}
				rest.MatchLabels[k] = v
			}
		}
		for _, e := range sel.MatchExpressions {
			switch {
			case e.Key == ciliumServiceNamespace && e.Operator == metav1.LabelSelectorOpIn && len(to.Namespaces) == 0:
				to.Namespaces = union(to.Namespaces, e.Values...)
			case e.Key == ciliumServiceNamespace || e.Key == ciliumServiceName:
				r.note(obj, "spec.serviceSelector", "%s %s %v not imported: pvelb limits a pool by namespace with allocateTo.namespaces or namespaceSelector", e.Key, e.Operator, e.Values)
			default:
				rest.MatchExpressions = append(rest.MatchExpressions, e)
			}
		}
		if !isEmpty(rest) {
			to.ServiceSelector = rest
		}
		if len(to.Namespaces) > 0 || to.ServiceSelector != nil {
			out.Spec.AllocateTo = to
		}
	}
	switch {
	case bgp:
		out.Spec.Announce.Mode = v1alpha1.AnnounceBGP
		out.Spec.Announce.Communities = communities
		out.Spec.Announce.LocalPreference = localPref
	case len(l2) > 0:
		out.Spec.Announce.Mode = v1alpha1.AnnounceARP
		pol := l2[0]
		po := KindCiliumL2Policy + "/" + pol.Name
		if len(l2) > 1 {
			r.note(obj, "(announcement)", "%d L2 announcement policies announce LoadBalancer IPs; pvelb announces a pool one way: %s's node selector and interfaces are used", len(l2), po)
		}
		if s := pol.Spec.NodeSelector; s != nil && !isEmpty(s) {
			out.Spec.Announce.NodeSelector = s.DeepCopy()
		}
		if s := pol.Spec.ServiceSelector; s != nil && !isEmpty(s) {
			r.note(po, "spec.serviceSelector", "not imported: pvelb announces every address of pool %s, not only those of the Services selected", p.Name)
		}
		for _, re := range pol.Spec.Interfaces {
			if m := plainInterface.FindStringSubmatch(re); m != nil && len(m[1]) <= 15 {
				out.Spec.Announce.Interfaces = union(out.Spec.Announce.Interfaces, m[1])
				continue
			}
			r.note(po, "spec.interfaces", "%q is a pattern, pvelb takes interface names: not imported; set spec.announce.interfaces of pool %s (without any, the interface of the node's InternalIP answers)", re, p.Name)
		}
	default:
		out.Spec.Announce.Mode = v1alpha1.AnnounceARP
		r.note(obj, "(no announcement)", "no L2 announcement policy or BGP advertisement announces LoadBalancer IPs, so Cilium does not announce them; pvelb announces every pool, this one by ARP/NDP")
	}
	return out
}

// withoutFirstLast writes a prefix without its first and last address, as
// Cilium's allowFirstLastIPs: "No" reserves them (not for /31, /32, /127
// and /128, which would be left with nothing).
func withoutFirstLast(p netip.Prefix) string {
	if p.Bits() >= p.Addr().BitLen()-1 {
		return p.String()
	}
	first := p.Addr()
	last := first
	for i := 0; i < p.Addr().BitLen()-p.Bits(); i++ {
		last = setBit(last, p.Addr().BitLen()-1-i)
	}
	return first.Next().String() + "-" + last.Prev().String()
}

// setBit sets bit i (0 is the most significant) of a.
func setBit(a netip.Addr, i int) netip.Addr {
	b := a.AsSlice()
	b[i/8] |= 0x80 >> (i % 8)
	out, _ := netip.AddrFromSlice(b)
	return out
}

func (r *Result) ciliumPeers(c Cilium) []v1alpha1.BGPPeer {
	configs := map[string]CiliumBGPPeerConfig{}
	for _, pc := range c.BGPPeerConfigs {
		configs[pc.Name] = pc
	}
	var out []v1alpha1.BGPPeer
	for _, pp := range c.PeeringPolicies {
		obj := KindCiliumBGPPeeringPolicy + "/" + pp.Name
		for i, vr := range pp.Spec.VirtualRouters {
			for j, n := range vr.Neighbors {
				field := fmt.Sprintf("spec.virtualRouters[%d].neighbors[%d]", i, j)
				addr, err := netip.ParsePrefix(n.PeerAddress)
				if err != nil || !addr.IsSingleIP() {
					r.note(obj, field+".peerAddress", "%q not imported: pvelb needs one peer address (a /32 or /128)", n.PeerAddress)
					continue
				}
				p := newPeer(pp.Name + "-" + strings.NewReplacer(".", "-", ":", "-").Replace(addr.Addr().String()))
				p.Spec.MyASN = uint32(vr.LocalASN)
				p.Spec.PeerASN = uint32(n.PeerASN)
				p.Spec.PeerAddress = addr.Addr().String()
				if s := pp.Spec.NodeSelector; s != nil && !isEmpty(s) {
					p.Spec.NodeSelector = s.DeepCopy()
				}
				r.ciliumPeerSettings(obj, field+".", ciliumPeerSettings{
					peerPort: n.PeerPort, holdTime: n.HoldTimeSeconds, keepAlive: n.KeepAliveTimeSeconds, multihop: n.EBGPMultihopTTL,
					authSecretRef: n.AuthSecretRef, gracefulRestart: n.GracefulRestart,
				}, &p)
				out = append(out, p)
			}
		}
	}
	for _, cc := range c.BGPClusters {
		obj := KindCiliumBGPClusterConfig + "/" + cc.Name
		for i, inst := range cc.Spec.BGPInstances {
			for j, peer := range inst.Peers {
				field := fmt.Sprintf("spec.bgpInstances[%d].peers[%d]", i, j)
				if inst.LocalASN == nil || peer.PeerASN == nil || peer.PeerAddress == nil {
					r.note(obj, field, "peer %s not imported: pvelb needs localASN, peerASN and peerAddress (auto-discovered peers are not supported)", peer.Name)
					continue
				}
				p := newPeer(cc.Name + "-" + peer.Name)
				p.Spec.MyASN = uint32(*inst.LocalASN)
				p.Spec.PeerASN = uint32(*peer.PeerASN)
				p.Spec.PeerAddress = *peer.PeerAddress
				if s := cc.Spec.NodeSelector; s != nil && !isEmpty(s) {
					p.Spec.NodeSelector = s.DeepCopy()
				}
				if peer.PeerConfigRef != nil {
					pc, ok := configs[peer.PeerConfigRef.Name]
					if !ok {
						r.note(obj, field+".peerConfigRef", "CiliumBGPPeerConfig %s does not exist: peer %s imported with pvelb's defaults", peer.PeerConfigRef.Name, peer.Name)
					} else {
						r.ciliumPeerConfig(pc, &p)
					}
				}
				out = append(out, p)
			}
		}
	}
	return out
}

func (r *Result) ciliumPeerConfig(pc CiliumBGPPeerConfig, p *v1alpha1.BGPPeer) {
	r.ciliumPeerSettings(KindCiliumBGPPeerConfig+"/"+pc.Name, "spec.", pc.settings(), p)
}

// ciliumPeerSettings applies a peer's settings; obj and the field prefix
// name where they come from.
func (r *Result) ciliumPeerSettings(obj, prefix string, s ciliumPeerSettings, p *v1alpha1.BGPPeer) {
	if s.peerPort != nil {
		p.Spec.PeerPort = *s.peerPort
	}
	if s.holdTime != nil {
		p.Spec.HoldTime = metav1.Duration{Duration: time.Duration(*s.holdTime) * time.Second}
	}
	if s.keepAlive != nil {
		p.Spec.KeepaliveTime = &metav1.Duration{Duration: time.Duration(*s.keepAlive) * time.Second}
	}
	if s.authSecretRef != nil && *s.authSecretRef != "" {
		p.Spec.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: ciliumSecretsNamespace, Name: *s.authSecretRef, Key: "password"}
		r.note(obj, prefix+"authSecretRef", "imported as Secret %s/%s: Cilium reads it from its bgp-secrets-namespace; change passwordSecretRef.namespace of BGPPeer %s if yours is not %s",
			ciliumSecretsNamespace, *s.authSecretRef, p.Name, ciliumSecretsNamespace)
	}
	if g := s.gracefulRestart; g != nil && g.Enabled {
		p.Spec.GracefulRestart = &v1alpha1.GracefulRestart{Enabled: true}
		if g.RestartTimeSeconds != nil {
			p.Spec.GracefulRestart.RestartTime = &metav1.Duration{Duration: time.Duration(*g.RestartTimeSeconds) * time.Second}
		}
	}
	if m := s.multihop; m != nil && *m > 1 && p.Spec.PeerASN != p.Spec.MyASN {
		ttl := *m
		p.Spec.EBGPMultiHop = &ttl
	}
}
