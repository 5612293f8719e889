package membership

import (
	"slices"
	"strings"
	"time"
)

// PeerView is one peer as this member sees it: what an operator (and
// `pvelbctl doctor`) needs to tell which pairs of nodes do not hear each
// other.
type PeerView struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	// Voter: the API does not report the Node NotReady.
	Voter bool `json:"voter"`
	// Heard: a valid heartbeat from it arrived within dead-after.
	Heard bool `json:"heard"`
	// HearsUs: its last heartbeat says it hears this node.
	HearsUs bool `json:"hearsUs"`
	// Electable: it may win elections in this node's view.
	Electable bool `json:"electable"`
	// Restarting: it said it restarts in place and is kept elected.
	Restarting bool `json:"restarting,omitempty"`
	// LastHeard: how long ago its last valid message arrived; empty when
	// never.
	LastHeard string `json:"lastHeard,omitempty"`
}

// View is this member's whole view, for the announcer's /status endpoint.
type View struct {
	Node      string     `json:"node"`
	Quorum    bool       `json:"quorum"`
	MayAnswer bool       `json:"mayAnswer"`
	Electable []string   `json:"electable"`
	Peers     []PeerView `json:"peers"`
}

// View returns this member's current view, peers sorted by name.
func (m *Membership) View() View {
	now := time.Now()
	m.mu.Lock()
	v := View{Node: m.cfg.Node, Quorum: m.decision.Quorum, Electable: slices.Clone(m.decision.Electable)}
	for name, p := range m.peers {
		pv := PeerView{Name: name, Address: p.Addr.String(), Voter: p.Voter, Heard: p.heard, HearsUs: p.heard && p.hearsUs,
			Electable: slices.Contains(m.decision.Electable, name), Restarting: !p.reservedUntil.IsZero()}
		if !p.lastSeen.IsZero() {
			pv.LastHeard = now.Sub(p.lastSeen).Round(time.Millisecond).String()
		}
		v.Peers = append(v.Peers, pv)
	}
	m.mu.Unlock()
	v.MayAnswer = m.MayAnswer()
	slices.SortFunc(v.Peers, func(a, b PeerView) int { return strings.Compare(a.Name, b.Name) })
	return v
}
