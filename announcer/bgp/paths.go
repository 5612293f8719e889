package bgp

import (
	"fmt"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

var (
	familyIPv4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyIPv6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

func familyOf(r route) *api.Family {
	if r.prefix.Addr().Is4() {
		return familyIPv4
	}
	return familyIPv6
}

// apiPath turns a route into the gobgp path it advertises. An unset next
// hop is sent as 0.0.0.0 or ::, which gobgp replaces by each session's local
// address.
func apiPath(r route) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{
		Prefix:    r.prefix.Addr().String(),
		PrefixLen: uint32(r.prefix.Bits()),
	})
	if err != nil {
		return nil, err
	}
	attrs := []proto.Message{&api.OriginAttribute{Origin: 0}} // IGP: the VIP is ours
	if r.prefix.Addr().Is4() {
		nh := "0.0.0.0"
		if r.nextHop.IsValid() {
			nh = r.nextHop.String()
		}
		attrs = append(attrs, &api.NextHopAttribute{NextHop: nh})
	} else {
		// IPv6 reachability always travels in MP_REACH_NLRI (RFC 4760).
		nh := "::"
		if r.nextHop.IsValid() {
			nh = r.nextHop.String()
		}
		attrs = append(attrs, &api.MpReachNLRIAttribute{Family: familyIPv6, NextHops: []string{nh}, Nlris: []*anypb.Any{nlri}})
	}
	if len(r.communities.Standard) > 0 {
		attrs = append(attrs, &api.CommunitiesAttribute{Communities: r.communities.Standard})
	}
	if len(r.communities.Large) > 0 {
		l := make([]*api.LargeCommunity, 0, len(r.communities.Large))
		for _, c := range r.communities.Large {
			l = append(l, &api.LargeCommunity{GlobalAdmin: c.GlobalAdmin, LocalData1: c.LocalData1, LocalData2: c.LocalData2})
		}
		attrs = append(attrs, &api.LargeCommunitiesAttribute{Communities: l})
	}
	if r.localPref != nil {
		attrs = append(attrs, &api.LocalPrefAttribute{LocalPref: *r.localPref})
	}
	pattrs := make([]*anypb.Any, 0, len(attrs))
	for _, a := range attrs {
		x, err := anypb.New(a)
		if err != nil {
			return nil, fmt.Errorf("route %s: encoding %T: %w", r.prefix, a, err)
		}
		pattrs = append(pattrs, x)
	}
	return &api.Path{Family: familyOf(r), Nlri: nlri, Pattrs: pattrs}, nil
}
