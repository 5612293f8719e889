// Package election decides which node answers for each VIP. It is pure: every
// announcer runs it on its own view (candidates from the API server, liveness
// from the membership) and, once those views agree, all reach the same answer
// without talking to each other.
//
// The ranking is per IP (services sharing an IP share its node) and uses
// rendezvous hashing (highest random weight) of (IP, node): VIPs spread evenly
// over nodes, and when a node fails only its own VIPs move. The preference
// order is computed over all candidates, dead or alive, and then reordered so
// that consecutive entries change zone (Proxmox host): the winner is the first
// live node in that order, so when a winner dies its VIPs move to a node on
// another host, which is unlikely to share its failure.
//
// The hash is part of the protocol between announcers: two versions with
// different hashes running side by side during a rolling update would both
// claim some VIPs. Change it only with a migration plan.
package election

import (
	"cmp"
	"net/netip"
	"slices"
)

// Candidate is a node that may announce an IP (it passed the pool's node
// selector, is not excluded from load balancers and, for Local services,
// holds a ready endpoint). Liveness is not part of it: see Elect.
type Candidate struct {
	Name string
	// Zone is the node's topology.kubernetes.io/zone (its Proxmox host);
	// empty counts as one zone of its own.
	Zone string
}

// Score is the rendezvous weight of node for ip. Exported for tests and
// debugging output (`pvelbctl status` can show why a node won).
func Score(ip netip.Addr, node string) uint64 {
	// FNV-1a over the 16-byte address form and the name, then a
	// splitmix64 finaliser: FNV alone correlates for names that differ
	// only in their last character (node1, node2...), which would skew the
	// spread.
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	b := ip.Unmap().As16()
	for _, c := range b {
		h ^= uint64(c)
		h *= prime
	}
	h ^= 0xff // separator: ("ab","c") and ("a","bc") must differ
	h *= prime
	for i := 0; i < len(node); i++ {
		h ^= uint64(node[i])
		h *= prime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// Order returns the candidates in preference order for ip. Input order and
// duplicate names do not matter (the first Zone seen for a duplicate name
// wins; the caller should not pass conflicting duplicates). The result is a
// new slice.
func Order(ip netip.Addr, candidates []Candidate) []Candidate {
	type scored struct {
		Candidate
		score uint64
	}
	all := make([]scored, 0, len(candidates))
	seen := make(map[string]bool, len(candidates))
	for _, c := range candidates {
		if seen[c.Name] {
			continue
		}
		seen[c.Name] = true
		all = append(all, scored{c, Score(ip, c.Name)})
	}
	slices.SortFunc(all, func(a, b scored) int {
		if a.score != b.score {
			return cmp.Compare(b.score, a.score)
		}
		return cmp.Compare(a.Name, b.Name)
	})

	// Zone diversity in rounds: each round takes, by score, at most one node
	// per zone; a new round starts when every remaining node's zone was used.
	// The first k entries thus cover min(k, zones) distinct zones.
	out := make([]Candidate, 0, len(all))
	used := map[string]bool{}
	taken := make([]bool, len(all))
	for len(out) < len(all) {
		picked := false
		for i, s := range all {
			if taken[i] || used[s.Zone] {
				continue
			}
			taken[i], used[s.Zone], picked = true, true, true
			out = append(out, s.Candidate)
		}
		if !picked {
			clear(used)
		}
	}
	return out
}

// Elect returns the first live candidate in Order(ip, candidates), or false
// when no candidate is alive.
func Elect(ip netip.Addr, candidates []Candidate, alive func(name string) bool) (string, bool) {
	for _, c := range Order(ip, candidates) {
		if alive(c.Name) {
			return c.Name, true
		}
	}
	return "", false
}
