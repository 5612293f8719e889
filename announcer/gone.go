package announcer

import (
	"slices"
	"time"
)

// goneAfter is how long a node must stay out of the electable set before
// other announcers delete what it reported: a brief stall or a lost
// heartbeat (a membership flap of a few hundred milliseconds) must not
// cost a delete and a rewrite of its objects.
const goneAfter = 10 * time.Second

// goneTracker tells which nodes have been out of the electable set for
// goneAfter. Not safe for concurrent use: one per goroutine.
type goneTracker struct {
	absent map[string]time.Time // node -> first seen not electable
}

// update records the view at now and returns the nodes gone for goneAfter
// (sorted) and, when some node is absent but not yet gone, how long until
// the next one is (0 when none is pending).
func (g *goneTracker) update(now time.Time, nodes, electable []string) (gone []string, next time.Duration) {
	if g.absent == nil {
		g.absent = map[string]time.Time{}
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		seen[n] = true
		if slices.Contains(electable, n) {
			delete(g.absent, n)
			continue
		}
		since, ok := g.absent[n]
		if !ok {
			since = now
			g.absent[n] = now
		}
		if wait := goneAfter - now.Sub(since); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		gone = append(gone, n)
	}
	for n := range g.absent {
		if !seen[n] {
			delete(g.absent, n) // its Node is gone: callers treat it as gone
		}
	}
	slices.Sort(gone)
	return gone, next
}
