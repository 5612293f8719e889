package membership

import (
	"slices"
	"testing"
)

func TestDecide(t *testing.T) {
	// both: heard both ways and electable; voter unless said otherwise.
	both := func(name string, vouches ...string) PeerState {
		return PeerState{Name: name, Voter: true, Heard: true, HearsUs: true, Electable: true, Vouches: vouches}
	}
	unheard := func(name string) PeerState { return PeerState{Name: name, Voter: true} }
	tests := []struct {
		name          string
		self          string
		held          bool
		peers         []PeerState
		wantQuorum    bool
		wantElectable []string
	}{
		{
			name: "all connected", self: "n1",
			peers:      []PeerState{both("n2"), both("n3")},
			wantQuorum: true, wantElectable: []string{"n1", "n2", "n3"},
		},
		{
			// Cut off both ways: the others still have this node for an
			// interval longer than it has them, so it steps down first.
			name: "peers heard but stale do not make a quorum", self: "n1",
			peers: []PeerState{
				{Name: "n2", Voter: true, Heard: true, Stale: true, HearsUs: true, Electable: true},
				{Name: "n3", Voter: true, Heard: true, Stale: true, HearsUs: true, Electable: true},
			},
			wantQuorum: false, wantElectable: []string{"n2", "n3"},
		},
		{
			name: "one stale peer of three leaves a quorum", self: "n1",
			peers: []PeerState{
				{Name: "n2", Voter: true, Heard: true, Stale: true, HearsUs: true, Electable: true},
				both("n3"),
			},
			wantQuorum: true, wantElectable: []string{"n1", "n2", "n3"},
		},
		{
			name: "alone of one", self: "n1",
			wantQuorum: true, wantElectable: []string{"n1"},
		},
		{
			// The reproduction: inbound UDP dropped on n1, it hears nobody.
			name: "hears nobody of three: steps down", self: "n1",
			peers:      []PeerState{unheard("n2"), unheard("n3")},
			wantQuorum: false, wantElectable: nil,
		},
		{
			// The other side of it: n2 hears n1, but n1 hears nobody.
			name: "a peer that does not hear us is not connected", self: "n2",
			peers: []PeerState{
				{Name: "n1", Voter: true, Heard: true, HearsUs: false, Electable: false},
				both("n3"),
			},
			wantQuorum: true, wantElectable: []string{"n2", "n3"},
		},
		{
			name: "outbound cut: we hear them, they do not hear us", self: "n1",
			peers: []PeerState{
				{Name: "n2", Voter: true, Heard: true, HearsUs: false, Electable: true},
				{Name: "n3", Voter: true, Heard: true, HearsUs: false, Electable: true},
			},
			wantQuorum: false, wantElectable: nil,
		},
		{
			// n1 and n3 do not hear each other; n2 hears both and vouches.
			name: "partial partition: a vouch makes the far side electable", self: "n3",
			peers:      []PeerState{unheard("n1"), both("n2", "n1")},
			wantQuorum: true, wantElectable: []string{"n1", "n2", "n3"},
		},
		{
			name: "a vouch never overrides what the peer says of itself", self: "n3",
			peers: []PeerState{
				{Name: "n1", Voter: true, Heard: true, HearsUs: false, Electable: false},
				both("n2", "n1"),
			},
			wantQuorum: true, wantElectable: []string{"n2", "n3"},
		},
		{
			name: "vouches count only from connected, electable peers", self: "n3",
			peers: []PeerState{
				unheard("n1"),
				{Name: "n2", Voter: true, Heard: true, HearsUs: false, Electable: true, Vouches: []string{"n1"}},
				both("n4"), both("n5"),
			},
			wantQuorum: true, wantElectable: []string{"n3", "n4", "n5"},
		},
		{
			name: "vouches for unknown nodes and for self are ignored", self: "n1",
			peers:      []PeerState{both("n2", "n1", "ghost")},
			wantQuorum: true, wantElectable: []string{"n1", "n2"},
		},
		{
			name: "two voters: the half holding the smallest name answers", self: "a",
			peers:      []PeerState{unheard("b")},
			wantQuorum: true, wantElectable: []string{"a"},
		},
		{
			name: "two voters: the other half steps down", self: "b",
			peers:      []PeerState{unheard("a")},
			wantQuorum: false, wantElectable: nil,
		},
		{
			name: "four voters split two and two: only the half with the smallest name", self: "c",
			peers:      []PeerState{unheard("a"), unheard("b"), both("d")},
			wantQuorum: false, wantElectable: []string{"d"},
		},
		{
			// NotReady in the API: the cluster shrank, the survivor answers.
			name: "non-voters do not count towards the base", self: "n3",
			peers: []PeerState{
				{Name: "n1"}, {Name: "n2"},
			},
			wantQuorum: true, wantElectable: []string{"n3"},
		},
		{
			name: "a connected non-voter is still electable", self: "n1",
			peers:      []PeerState{both("n2"), {Name: "n3", Heard: true, HearsUs: true, Electable: true}},
			wantQuorum: true, wantElectable: []string{"n1", "n2", "n3"},
		},
		{
			name: "held (starting, stalled, leaving): quorum but not electable", self: "n1", held: true,
			peers:      []PeerState{both("n2"), both("n3")},
			wantQuorum: true, wantElectable: []string{"n2", "n3"},
		},
		{
			name: "a peer heard but not yet electable (its hold-down)", self: "n1",
			peers: []PeerState{
				{Name: "n2", Voter: true, Heard: true, HearsUs: true},
				both("n3"),
			},
			wantQuorum: true, wantElectable: []string{"n1", "n3"},
		},
		{
			name: "a peer restarting in place stays electable while silent", self: "n1",
			peers:      []PeerState{{Name: "n2", Voter: true, Reserved: true}, both("n3")},
			wantQuorum: true, wantElectable: []string{"n1", "n2", "n3"},
		},
		{
			name: "a restarted peer in its hold-down stays electable while reserved", self: "n1",
			peers:      []PeerState{{Name: "n2", Voter: true, Heard: true, HearsUs: true, Reserved: true}, both("n3")},
			wantQuorum: true, wantElectable: []string{"n1", "n2", "n3"},
		},
		{
			// Silent, it does not count towards the quorum: of three
			// voters, one restarting and one unheard leave n1 alone.
			name: "a restarting peer does not count towards the quorum", self: "n1",
			peers:      []PeerState{{Name: "n2", Voter: true, Reserved: true}, unheard("n3")},
			wantQuorum: false, wantElectable: []string{"n2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.self, tt.held, tt.peers)
			if d.Quorum != tt.wantQuorum {
				t.Errorf("quorum %v, want %v", d.Quorum, tt.wantQuorum)
			}
			if !slices.Equal(d.Electable, tt.wantElectable) {
				t.Errorf("electable %v, want %v", d.Electable, tt.wantElectable)
			}
		})
	}
}

// TestDecideAgreesUnderPartialPartition checks the claim of quorum.go over
// every pattern of broken links among four voters: wherever two nodes both
// have quorum and their reports have crossed, they agree on who is
// electable, so their elections agree.
func TestDecideAgreesUnderPartialPartition(t *testing.T) {
	nodes := []string{"a", "b", "c", "d"}
	type link struct{ from, to int }
	var links []link
	for i := range nodes {
		for j := range nodes {
			if i != j {
				links = append(links, link{i, j})
			}
		}
	}
	checked := 0
	for mask := 0; mask < 1<<len(links); mask++ {
		hears := func(to, from int) bool { // to receives from
			for k, l := range links {
				if l.from == from && l.to == to {
					return mask&(1<<k) == 0
				}
			}
			return false
		}
		// Round 1: who claims electable, from heard/hearsUs alone.
		self := make([]bool, len(nodes))
		for i := range nodes {
			d := Decide(nodes[i], false, peersOf(i, nodes, hears, nil))
			self[i] = slices.Contains(d.Electable, nodes[i])
		}
		// Round 2: with those flags and first-hand vouches.
		views := make([][]string, len(nodes))
		for i := range nodes {
			views[i] = Decide(nodes[i], false, peersOf(i, nodes, hears, self)).Electable
		}
		for i := range nodes {
			for j := range nodes {
				if i >= j || !self[i] || !self[j] {
					continue
				}
				checked++
				if !slices.Equal(views[i], views[j]) {
					t.Fatalf("links cut %b: %s sees %v, %s sees %v", mask, nodes[i], views[i], nodes[j], views[j])
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no pair of quorate nodes checked")
	}
}

// peersOf builds node i's PeerStates for a link pattern; electable (nil in
// the first round) is each node's own claim.
func peersOf(i int, nodes []string, hears func(to, from int) bool, electable []bool) []PeerState {
	var out []PeerState
	for j, name := range nodes {
		if j == i {
			continue
		}
		p := PeerState{Name: name, Voter: true, Heard: hears(i, j), HearsUs: hears(j, i)}
		if electable != nil && p.Heard {
			p.Electable = electable[j]
			for k := range nodes {
				// j vouches for k when j hears k both ways and k is electable.
				if k != j && hears(j, k) && hears(k, j) && electable[k] {
					p.Vouches = append(p.Vouches, nodes[k])
				}
			}
		}
		out = append(out, p)
	}
	return out
}
