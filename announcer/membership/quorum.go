package membership

import "slices"

// The decision of who may answer, apart from the sockets that feed it.
//
// A heartbeat carries what its sender sees: for each peer whether the sender
// hears it, and whether the sender vouches for it (hears it both ways and the
// peer says it may answer). From its own reception and these reports every
// node decides, without the API server:
//
//   - Connected: a peer is connected when this node hears it and the peer's
//     last heartbeat says it hears this node. A one-way link counts for
//     neither side, so a node whose inbound (or outbound) membership traffic
//     is dropped is connected to nobody.
//   - Quorum: this node may answer only while it is connected to a strict
//     majority of the voters (itself included), or to exactly half of them
//     when that half holds the voter with the smallest name (so that of two
//     equal halves exactly one may answer). A node that hears nobody, or
//     sits in a minority, steps down instead of claiming every VIP.
//   - Electable: this node is electable when it has quorum and is not held
//     back (starting, stalled or leaving). A peer is electable in this node's
//     view when it says so itself and is connected, or when a connected,
//     electable peer vouches for it (a partial partition: A and C do not
//     hear each other, both hear B, B tells each about the other). A peer
//     heard saying it is not electable is not electable, whoever vouches.
//
// Two majorities always share a voter, and that voter vouches for both
// sides, so every electable node sees every other electable node and the
// elections agree once the reports have crossed (one heartbeat interval).
// Vouches are first-hand only: a node vouches for what it hears itself, never
// for what it was told, so stale news cannot circulate.

// PeerState is what this node knows of one peer for the decision.
type PeerState struct {
	Name string
	// Voter: the peer counts towards the quorum (its Node is not NotReady).
	Voter bool
	// Heard: a valid message from the peer arrived within DeadAfter.
	Heard bool
	// Stale: heard, but not within DeadAfter-Interval. A stale peer does
	// not count towards this node's quorum, though it stays electable in
	// its view until DeadAfter: so a node cut off from the others steps
	// down before they take its VIPs over (its last news of them is at
	// most an interval older than theirs of it), never after.
	Stale bool
	// The remaining fields are what the peer's last message said; they
	// count only while Heard.
	HearsUs   bool
	Electable bool
	Vouches   []string
	// Reserved: the peer said it is restarting in place and has not come
	// back electable yet (nor outlived its grace). It stays electable, so
	// its VIPs are not moved while it is away; nobody answers them then.
	// This never makes two answerers: the peer closed its fence before it
	// said so, and answers again only once electable by the rules above.
	Reserved bool
}

// Decision is the outcome of Decide.
type Decision struct {
	// Quorum: this node is connected to enough voters to answer.
	Quorum bool
	// Electable lists the nodes that may win an election in this node's
	// view, sorted; this node is among them only when it may answer.
	Electable []string
	// Connected lists the peers heard both ways, sorted.
	Connected []string
}

// Decide computes which nodes may answer, from self's point of view. held
// is true while self must not answer whatever the quorum (starting, stalled,
// leaving).
func Decide(self string, held bool, peers []PeerState) Decision {
	var d Decision
	voters, connectedVoters := 1, 1 // self
	smallest, smallestConnected := self, true
	byName := make(map[string]*PeerState, len(peers))
	for i := range peers {
		p := &peers[i]
		if p.Name == self {
			continue
		}
		byName[p.Name] = p
		connected := p.Heard && p.HearsUs
		if connected {
			d.Connected = append(d.Connected, p.Name)
		}
		if !p.Voter {
			continue
		}
		voters++
		counts := connected && !p.Stale
		if counts {
			connectedVoters++
		}
		if p.Name < smallest {
			smallest, smallestConnected = p.Name, counts
		}
	}
	d.Quorum = 2*connectedVoters > voters || (2*connectedVoters == voters && smallestConnected)

	electable := map[string]bool{}
	if d.Quorum && !held {
		electable[self] = true
	}
	for _, p := range byName {
		if (p.Heard && p.HearsUs && p.Electable) || p.Reserved {
			electable[p.Name] = true
		}
	}
	// Vouches only from connected, electable peers, and never against what
	// a peer says of itself.
	for _, q := range byName {
		if !(q.Heard && q.HearsUs && q.Electable) {
			continue
		}
		for _, name := range q.Vouches {
			if name == self {
				continue
			}
			if p, ok := byName[name]; ok && p.Heard && !p.Electable {
				continue
			}
			if _, known := byName[name]; known {
				electable[name] = true
			}
		}
	}
	for name := range electable {
		d.Electable = append(d.Electable, name)
	}
	slices.Sort(d.Electable)
	slices.Sort(d.Connected)
	return d
}
