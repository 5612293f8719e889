package convert

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

// MetalLB's resources, in the fields of its schema (metallb.io v1beta1, and
// v1beta2 for BGPPeer) that the conversion reads.
type MetalLB struct {
	Pools       []MetalLBPool
	L2          []MetalLBL2Advertisement
	BGP         []MetalLBBGPAdvertisement
	Peers       []MetalLBPeer
	Communities []MetalLBCommunity
	BFDProfiles []MetalLBBFDProfile
}

// MetalLB kinds, as FromMetalLBObjects takes them.
const (
	KindIPAddressPool    = "IPAddressPool"
	KindL2Advertisement  = "L2Advertisement"
	KindBGPAdvertisement = "BGPAdvertisement"
	KindMetalLBBGPPeer   = "BGPPeer"
	KindCommunity        = "Community"
	KindBFDProfile       = "BFDProfile"
)

type MetalLBPool struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Addresses         []string `json:"addresses"`
		AutoAssign        *bool    `json:"autoAssign,omitempty"`
		AvoidBuggyIPs     bool     `json:"avoidBuggyIPs,omitempty"`
		ServiceAllocation *struct {
			Priority           int                    `json:"priority,omitempty"`
			Namespaces         []string               `json:"namespaces,omitempty"`
			NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`
			ServiceSelectors   []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
		} `json:"serviceAllocation,omitempty"`
	} `json:"spec"`
}

// metalLBAdvertisement is what L2 and BGP advertisements share.
type metalLBAdvertisement struct {
	IPAddressPools         []string               `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	ServiceSelectors       []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

type MetalLBL2Advertisement struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		metalLBAdvertisement   `json:",inline"`
		Interfaces             []string `json:"interfaces,omitempty"`
		PreferredNodeSelectors []any    `json:"preferredNodeSelectors,omitempty"`
	} `json:"spec"`
}

type MetalLBBGPAdvertisement struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		metalLBAdvertisement `json:",inline"`
		AggregationLength    *int32   `json:"aggregationLength,omitempty"`
		AggregationLengthV6  *int32   `json:"aggregationLengthV6,omitempty"`
		LocalPref            uint32   `json:"localPref,omitempty"`
		AsPathPrepend        uint8    `json:"asPathPrepend,omitempty"`
		Communities          []string `json:"communities,omitempty"`
		Peers                []string `json:"peers,omitempty"`
	} `json:"spec"`
}

type MetalLBPeer struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		MyASN                  uint32                 `json:"myASN"`
		LocalASN               uint32                 `json:"localASN,omitempty"`
		PeerASN                uint32                 `json:"peerASN,omitempty"`
		DynamicASN             string                 `json:"dynamicASN,omitempty"`
		PeerAddress            string                 `json:"peerAddress,omitempty"`
		Interface              string                 `json:"interface,omitempty"`
		SourceAddress          string                 `json:"sourceAddress,omitempty"`
		PeerPort               uint16                 `json:"peerPort,omitempty"`
		HoldTime               *metav1.Duration       `json:"holdTime,omitempty"`
		KeepaliveTime          *metav1.Duration       `json:"keepaliveTime,omitempty"`
		ConnectTime            *metav1.Duration       `json:"connectTime,omitempty"`
		RouterID               string                 `json:"routerID,omitempty"`
		NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
		Password               string                 `json:"password,omitempty"`
		PasswordSecret         corev1.SecretReference `json:"passwordSecret,omitempty"`
		BFDProfile             string                 `json:"bfdProfile,omitempty"`
		EnableGracefulRestart  bool                   `json:"enableGracefulRestart,omitempty"`
		EBGPMultiHop           bool                   `json:"ebgpMultiHop,omitempty"`
		VRF                    string                 `json:"vrf,omitempty"`
		DisableMP              bool                   `json:"disableMP,omitempty"`
		DualStackAddressFamily bool                   `json:"dualStackAddressFamily,omitempty"`
	} `json:"spec"`
}

type MetalLBCommunity struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Communities []struct {
			Name  string `json:"name,omitempty"`
			Value string `json:"value,omitempty"`
		} `json:"communities,omitempty"`
	} `json:"spec"`
}

type MetalLBBFDProfile struct {
	metav1.ObjectMeta `json:"metadata"`
}

// FromMetalLBObjects decodes MetalLB's objects, keyed by kind.
func FromMetalLBObjects(objs map[string][]unstructured.Unstructured) (MetalLB, error) {
	var m MetalLB
	var err error
	if m.Pools, err = decode[MetalLBPool](KindIPAddressPool, objs[KindIPAddressPool]); err != nil {
		return m, err
	}
	if m.L2, err = decode[MetalLBL2Advertisement](KindL2Advertisement, objs[KindL2Advertisement]); err != nil {
		return m, err
	}
	if m.BGP, err = decode[MetalLBBGPAdvertisement](KindBGPAdvertisement, objs[KindBGPAdvertisement]); err != nil {
		return m, err
	}
	if m.Peers, err = decode[MetalLBPeer](KindMetalLBBGPPeer, objs[KindMetalLBBGPPeer]); err != nil {
		return m, err
	}
	if m.Communities, err = decode[MetalLBCommunity](KindCommunity, objs[KindCommunity]); err != nil {
		return m, err
	}
	if m.BFDProfiles, err = decode[MetalLBBFDProfile](KindBFDProfile, objs[KindBFDProfile]); err != nil {
		return m, err
	}
	return m, nil
}

// multiHopTTL is the TTL MetalLB (FRR's ebgp-multihop without a
// number) uses for a multi-hop eBGP session.
const multiHopTTL = 255

// ConvertMetalLB converts MetalLB's configuration.
func ConvertMetalLB(m MetalLB) Result {
	var r Result
	communities := map[string]string{}
	for _, c := range m.Communities {
		for _, e := range c.Spec.Communities {
			communities[e.Name] = e.Value
		}
	}
	for _, p := range m.Pools {
		r.Pools = append(r.Pools, r.metalLBPool(p, m, communities))
	}
	for _, p := range m.Peers {
		if peer, ok := r.metalLBPeer(p); ok {
			r.Peers = append(r.Peers, peer)
		}
	}
	for _, b := range m.BFDProfiles {
		r.note(KindBFDProfile+"/"+b.Name, "spec", "not imported: pvelb has no BFD; a lost peer is noticed when the session's holdTime runs out")
	}
	sortPools(r.Pools)
	sortPeers(r.Peers)
	return r
}

// advertises reports whether an advertisement covers the pool: it names
// it, one of its selectors picks it, or it names and selects nothing (all
// pools).
func (a metalLBAdvertisement) advertises(p MetalLBPool) bool {
	if len(a.IPAddressPools) == 0 && len(a.IPAddressPoolSelectors) == 0 {
		return true
	}
	for _, n := range a.IPAddressPools {
		if n == p.Name {
			return true
		}
	}
	for _, s := range a.IPAddressPoolSelectors {
		if sel, err := metav1.LabelSelectorAsSelector(&s); err == nil && sel.Matches(labels.Set(p.Labels)) {
			return true
		}
	}
	return false
}

func (r *Result) metalLBPool(p MetalLBPool, m MetalLB, communities map[string]string) v1alpha1.IPPool {
	obj := KindIPAddressPool + "/" + p.Name
	out := newPool(p.Name)
	for _, a := range p.Spec.Addresses {
		var s string
		var ok bool
		if first, last, isRange := strings.Cut(a, "-"); isRange {
			s, ok = addrRange(first, last)
		} else {
			s, ok = cidr(a)
		}
		if !ok {
			r.note(obj, "spec.addresses", "%q is not an address range pvelb reads; left out of the pool", a)
			continue
		}
		out.Spec.Addresses = union(out.Spec.Addresses, s)
	}
	if p.Spec.AutoAssign != nil && !*p.Spec.AutoAssign {
		f := false
		out.Spec.AutoAssign = &f
	}
	out.Spec.AvoidBuggyIPs = p.Spec.AvoidBuggyIPs
	if sa := p.Spec.ServiceAllocation; sa != nil {
		to := &v1alpha1.AllocateTo{Namespaces: sa.Namespaces}
		switch {
		case sa.Priority > 0:
			to.Priority = int32(sa.Priority)
		case sa.Priority < 0:
			r.note(obj, "spec.serviceAllocation.priority", "%d is not a priority pvelb takes (0 or more); the pool has none, as MetalLB treats it", sa.Priority)
		}
		to.NamespaceSelector = r.oneSelector(obj, "spec.serviceAllocation.namespaceSelectors", sa.NamespaceSelectors,
			"so Services in namespaces only the others pick no longer get addresses from this pool")
		to.ServiceSelector = r.oneSelector(obj, "spec.serviceAllocation.serviceSelectors", sa.ServiceSelectors,
			"so Services only the others pick no longer get addresses from this pool")
		if len(to.Namespaces) > 0 || to.NamespaceSelector != nil || to.ServiceSelector != nil || to.Priority != 0 {
			out.Spec.AllocateTo = to
		}
	}

	var l2 []MetalLBL2Advertisement
	var bgp []MetalLBBGPAdvertisement
	for _, a := range m.L2 {
		if a.Spec.advertises(p) {
			l2 = append(l2, a)
		}
	}
	for _, a := range m.BGP {
		if a.Spec.advertises(p) {
			bgp = append(bgp, a)
		}
	}
	var nodeSels [][]metav1.LabelSelector
	switch {
	case len(bgp) > 0:
		out.Spec.Announce.Mode = v1alpha1.AnnounceBGP
		for _, a := range l2 {
			r.note(KindL2Advertisement+"/"+a.Name, "spec", "also announces pool %s, which BGPAdvertisement/%s announces over BGP: pvelb announces a pool one way, over BGP", p.Name, bgp[0].Name)
		}
		var prefs []string
		for _, a := range bgp {
			ao := KindBGPAdvertisement + "/" + a.Name
			nodeSels = append(nodeSels, a.Spec.NodeSelectors)
			for _, c := range a.Spec.Communities {
				v := c
				if alias, ok := communities[c]; ok {
					v = alias
				}
				v = strings.TrimPrefix(v, "large:")
				out.Spec.Announce.Communities = union(out.Spec.Announce.Communities, v)
			}
			if a.Spec.LocalPref != 0 {
				lp := a.Spec.LocalPref
				if out.Spec.Announce.LocalPreference == nil {
					out.Spec.Announce.LocalPreference = &lp
				}
				prefs = union(prefs, fmt.Sprint(lp))
			}
			if l := a.Spec.AggregationLength; l != nil && *l != 32 {
				r.note(ao, "spec.aggregationLength", "/%d not imported: pvelb advertises each IPv4 address as a /32", *l)
			}
			if l := a.Spec.AggregationLengthV6; l != nil && *l != 128 {
				r.note(ao, "spec.aggregationLengthV6", "/%d not imported: pvelb advertises each IPv6 address as a /128", *l)
			}
			if a.Spec.AsPathPrepend > 0 {
				r.note(ao, "spec.asPathPrepend", "not imported: pvelb does not lengthen the AS path")
			}
			if len(a.Spec.ServiceSelectors) > 0 {
				r.note(ao, "spec.serviceSelectors", "not imported: pvelb advertises every address of pool %s, not only those of the Services selected", p.Name)
			}
			if len(a.Spec.Peers) > 0 {
				r.note(ao, "spec.peers", "not imported: pvelb advertises pool %s to every BGPPeer of a node, not only to %s", p.Name, strings.Join(a.Spec.Peers, ", "))
			}
		}
		if len(prefs) > 1 {
			r.note(obj, "localPref", "advertisements set %s: pvelb sets one localPreference per pool, %s", strings.Join(prefs, ", "), prefs[0])
		}
	case len(l2) > 0:
		out.Spec.Announce.Mode = v1alpha1.AnnounceARP
		allIfaces := false
		for _, a := range l2 {
			ao := KindL2Advertisement + "/" + a.Name
			nodeSels = append(nodeSels, a.Spec.NodeSelectors)
			if len(a.Spec.ServiceSelectors) > 0 {
				r.note(ao, "spec.serviceSelectors", "not imported: pvelb announces every address of pool %s, not only those of the Services selected", p.Name)
			}
			if len(a.Spec.PreferredNodeSelectors) > 0 {
				r.note(ao, "spec.preferredNodeSelectors", "not imported: pvelb elects the answering node among the eligible ones by its own ranking")
			}
			if len(a.Spec.Interfaces) == 0 {
				allIfaces = true
			}
			out.Spec.Announce.Interfaces = union(out.Spec.Announce.Interfaces, a.Spec.Interfaces...)
		}
		if allIfaces {
			out.Spec.Announce.Interfaces = nil
		}
	default:
		out.Spec.Announce.Mode = v1alpha1.AnnounceARP
		r.note(obj, "(no advertisement)", "MetalLB hands out the pool's addresses without announcing them; pvelb announces every pool, this one by ARP/NDP")
	}
	// Nodes: any advertisement without a node selector means every node;
	// otherwise the selectors of all of them, ORed.
	var sels []metav1.LabelSelector
	for _, s := range nodeSels {
		if len(s) == 0 {
			sels = nil
			break
		}
		sels = append(sels, s...)
	}
	out.Spec.Announce.NodeSelector = r.oneSelector(obj, "advertisements' nodeSelectors", sels,
		"so nodes only the others pick no longer announce its addresses")
	return out
}

func (r *Result) metalLBPeer(p MetalLBPeer) (v1alpha1.BGPPeer, bool) {
	obj := KindMetalLBBGPPeer + "/" + p.Name
	s := p.Spec
	out := newPeer(p.Name)
	if s.PeerAddress == "" {
		r.note(obj, "spec.interface", "not imported: pvelb peers with an address (BGP unnumbered on %q is not supported); write a BGPPeer with peerAddress", s.Interface)
		return out, false
	}
	out.Spec.PeerAddress = s.PeerAddress
	out.Spec.MyASN = s.MyASN
	if s.LocalASN != 0 {
		out.Spec.MyASN = s.LocalASN // MetalLB's per-session override of myASN
	}
	out.Spec.PeerASN = s.PeerASN
	if s.PeerASN == 0 {
		if s.DynamicASN != "internal" {
			r.note(obj, "spec.dynamicASN", "not imported: pvelb needs the peer's ASN (dynamicASN %q); write a BGPPeer with peerASN", s.DynamicASN)
			return out, false
		}
		out.Spec.PeerASN = out.Spec.MyASN
	}
	out.Spec.PeerPort = int32(s.PeerPort)
	if s.HoldTime != nil {
		out.Spec.HoldTime = *s.HoldTime
		if s.HoldTime.Duration == 0 {
			r.note(obj, "spec.holdTime", "0s (no keepalives) not imported: the session gets pvelb's default holdTime, 90s; set holdTime: 0s on BGPPeer %s to keep it", p.Name)
		}
	}
	out.Spec.KeepaliveTime = s.KeepaliveTime
	out.Spec.SourceAddress = s.SourceAddress
	out.Spec.NodeSelector = r.oneSelector(obj, "spec.nodeSelectors", s.NodeSelectors, "so nodes only the others pick no longer open this session")
	if s.PasswordSecret.Name != "" {
		ns := s.PasswordSecret.Namespace
		if ns == "" {
			ns = p.Namespace
		}
		out.Spec.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: ns, Name: s.PasswordSecret.Name, Key: "password"}
	}
	if s.Password != "" {
		r.note(obj, "spec.password", "not imported: pvelb reads the password from a Secret only; put it in one and set spec.passwordSecretRef, or the session will not come up")
	}
	if s.EnableGracefulRestart {
		out.Spec.GracefulRestart = &v1alpha1.GracefulRestart{Enabled: true}
	}
	if s.EBGPMultiHop {
		if out.Spec.PeerASN != out.Spec.MyASN {
			ttl := int32(multiHopTTL)
			out.Spec.EBGPMultiHop = &ttl
		} else {
			r.note(obj, "spec.ebgpMultiHop", "dropped: an iBGP session is not limited to one hop anyway")
		}
	}
	if s.BFDProfile != "" {
		r.note(obj, "spec.bfdProfile", "not imported: pvelb has no BFD; a lost peer is noticed when holdTime (%s) runs out", holdTimeOf(out))
	}
	for _, o := range []struct {
		set           bool
		field, effect string
	}{
		{s.RouterID != "", "spec.routerID", "not imported: pvelb uses each node's address as its router ID"},
		{s.ConnectTime != nil, "spec.connectTime", "not imported: pvelb retries a session on its own schedule"},
		{s.VRF != "", "spec.vrf", "not imported: pvelb opens sessions in the default VRF"},
		{s.DisableMP, "spec.disableMP", "not imported: pvelb sends each family on a session of that family"},
		{s.DualStackAddressFamily, "spec.dualStackAddressFamily", "not imported: pvelb sends each family on a session of that family; add a BGPPeer of the other family"},
	} {
		if o.set {
			r.note(obj, o.field, "%s", o.effect)
		}
	}
	return out, true
}

func holdTimeOf(p v1alpha1.BGPPeer) string {
	if p.Spec.HoldTime.Duration == 0 {
		return (90 * time.Second).String() + ", the default"
	}
	return p.Spec.HoldTime.Duration.String()
}
