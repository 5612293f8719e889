package firewall

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Comments are the only ownership record pvelb has in Proxmox: an entry is
// pvelb's exactly when its comment starts with markerPrefix. Everything after
// the prefix is for people and for ParseComment; behaviour depends only on
// "is it ours" and "is it a seed".
const (
	markerPrefix = "pvelb:"
	seedBody     = "node address"
	// maxCommentLen bounds what pvelb writes. Proxmox sets no limit on the
	// comment, but it stores each entry on one line of the VM's .fw file, and
	// a long list of owners helps nobody; past this the comment gives a count.
	maxCommentLen = 120
)

// SeedComment marks an entry pvelb added for the VM's own address when it had
// to create the VM's ipfilter set.
const SeedComment = markerPrefix + " " + seedBody

// ClusterSetComment is the comment of the cluster-level IPSet pvelb creates.
const ClusterSetComment = markerPrefix + " VIPs of Kubernetes LoadBalancer services"

// VMSetComment is the comment of an ipfilter-netX set pvelb creates.
const VMSetComment = markerPrefix + " created to admit LoadBalancer VIPs; seeded with the VM's own addresses"

// Marker is what a pvelb comment says.
type Marker struct {
	// Seed is true for the VM's own addresses pvelb added when it created the set.
	Seed bool
	// Services are "namespace/name" of the Services holding the address, when listed.
	Services []string
	// ServiceCount is the number of Services when the comment only gives a count.
	ServiceCount int
	// Pools are the IPPools whose ranges an admit-ranges entry belongs to.
	Pools []string
}

// IsOurs reports whether an IPSet entry comment marks the entry as pvelb's.
func IsOurs(comment string) bool {
	return strings.HasPrefix(strings.TrimSpace(comment), markerPrefix)
}

// IsSeed reports whether comment marks one of the VM's own addresses seeded by pvelb.
func IsSeed(comment string) bool {
	m, ok := ParseComment(comment)
	return ok && m.Seed
}

// ParseComment reads a pvelb comment. ok is false for comments pvelb did not
// write. A pvelb comment with an unknown body is still pvelb's (ok is true) so
// that a newer pvelb's entries are cleaned up by an older one and vice versa.
func ParseComment(comment string) (m Marker, ok bool) {
	c := strings.TrimSpace(comment)
	if !strings.HasPrefix(c, markerPrefix) {
		return Marker{}, false
	}
	body := strings.TrimSpace(strings.TrimPrefix(c, markerPrefix))
	switch {
	case body == seedBody:
		m.Seed = true
	case strings.HasPrefix(body, "pool "):
		m.Pools = splitList(strings.TrimPrefix(body, "pool "))
	case strings.HasSuffix(body, " pools"):
		// Only a count: the names did not fit.
	case strings.HasSuffix(body, " services"):
		if n, err := strconv.Atoi(strings.TrimSuffix(body, " services")); err == nil {
			m.ServiceCount = n
		}
	case body != "":
		m.Services = splitList(body)
		m.ServiceCount = len(m.Services)
	}
	return m, true
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ServicesComment is the comment of an entry admitting one VIP held by the
// given Services ("namespace/name"). Owners are sorted and de-duplicated so the
// comment, and thus the steady state, does not depend on input order.
func ServicesComment(owners []string) string {
	o := sortedUnique(owners)
	if len(o) == 0 {
		return markerPrefix + " 0 services"
	}
	c := markerPrefix + " " + strings.Join(o, ",")
	if len(c) > maxCommentLen {
		return fmt.Sprintf("%s %d services", markerPrefix, len(o))
	}
	return c
}

// PoolsComment is the comment of an admit-ranges entry covering pool ranges.
func PoolsComment(pools []string) string {
	p := sortedUnique(pools)
	c := markerPrefix + " pool " + strings.Join(p, ",")
	if len(c) > maxCommentLen {
		return fmt.Sprintf("%s %d pools", markerPrefix, len(p))
	}
	return c
}

func sortedUnique(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}
