// Package claimlog remembers which other link-layer addresses claimed the
// VIPs this node answers for (ARP replies and gratuitous ARP, unsolicited
// neighbour advertisements), so the announcer can report them on /status
// and pvelbctl doctor can tell another pvelb node's handover claims from a
// foreign responder (a static address, another load balancer).
package claimlog

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// maxEntries bounds the log: the oldest entry goes first. A flood of
// spoofed MACs costs a fixed amount of memory.
const maxEntries = 256

// Claim is one (VIP, MAC) pair seen claiming.
type Claim struct {
	IP        netip.Addr `json:"ip"`
	MAC       string     `json:"mac"`
	Interface string     `json:"interface"`
	Count     int        `json:"count"`
	Last      time.Time  `json:"last"`
}

type key struct {
	ip  netip.Addr
	mac string
}

// Log is safe for concurrent use; the zero value is not: use New.
type Log struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[key]*Claim
}

// New returns an empty log.
func New() *Log { return &Log{now: time.Now, m: map[key]*Claim{}} }

// Record notes one claim of ip by mac on iface.
func (l *Log) Record(ip netip.Addr, mac net.HardwareAddr, iface string) {
	if l == nil {
		return
	}
	k := key{ip.Unmap(), mac.String()}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.m[k]
	if c == nil {
		if len(l.m) >= maxEntries {
			var oldest key
			first := true
			for kk, cc := range l.m {
				if first || cc.Last.Before(l.m[oldest].Last) {
					oldest, first = kk, false
				}
			}
			delete(l.m, oldest)
		}
		c = &Claim{IP: k.ip, MAC: k.mac, Interface: iface}
		l.m[k] = c
	}
	c.Count++
	c.Last = now
	c.Interface = iface
}

// Since returns the claims seen after t, by IP then MAC.
func (l *Log) Since(t time.Time) []Claim {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Claim
	for _, c := range l.m {
		if c.Last.After(t) {
			out = append(out, *c)
		}
	}
	slices.SortFunc(out, func(a, b Claim) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		if a.MAC < b.MAC {
			return -1
		}
		if a.MAC > b.MAC {
			return 1
		}
		return 0
	})
	return out
}
