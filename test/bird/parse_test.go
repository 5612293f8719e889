package bird

import (
	"slices"
	"testing"
)

// A real `birdc show route <prefix> all` output of BIRD 2.0.12 with two paths.
const birdRouteSample = `BIRD 2.0.12 ready.
Table master4:
198.51.100.10/32     unicast [n1 10:00:01.123] * (100) [i]
	via 192.0.2.11 on eth0
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 
	BGP.next_hop: 192.0.2.11
	BGP.local_pref: 200
	BGP.community: (65000,100) (65535,65281)
	BGP.large_community: (4200000000, 1, 2)
                     unicast [n2 10:00:01.456] (100) [i]
	via 192.0.2.12 on eth0
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 
	BGP.next_hop: 192.0.2.12
	BGP.local_pref: 50
`

func TestParseRoutes(t *testing.T) {
	got := ParseRoutes(birdRouteSample)
	if len(got) != 2 {
		t.Fatalf("got %d paths: %+v", len(got), got)
	}
	if !slices.Equal(Vias(got), []string{"192.0.2.11", "192.0.2.12"}) || got[0].Proto != "n1" || got[1].Proto != "n2" {
		t.Fatalf("paths %+v", got)
	}
	if got[0].Attrs["BGP.community"] != "(65000,100) (65535,65281)" || got[0].Attrs["BGP.large_community"] != "(4200000000, 1, 2)" ||
		got[1].Attrs["BGP.local_pref"] != "50" || got[0].Attrs["BGP.as_path"] != "" {
		t.Fatalf("attributes %+v", got)
	}
	if len(ParseRoutes("BIRD 2.0.12 ready.\nNetwork not found\n")) != 0 {
		t.Fatal("parsed paths from a miss")
	}
}
