// Package firewall keeps Proxmox firewall IPSets in line with the VIPs pvelb
// hands out: every VIP is listed in a cluster-level set (for the user's firewall
// rules) and admitted in the ipfilter-netX sets of the VMs that may announce it,
// because Proxmox's IP filter otherwise drops the VM's ARP/NDP replies for it.
//
// The package has a pure planner (this file: desired + observed state of one
// set -> the writes) and a reconciler that reads Proxmox, plans and writes.
//
// Safety rules the planner enforces:
//   - an entry is pvelb's only if its comment carries the "pvelb:" marker; any
//     other entry is never changed or removed, and if it already admits a VIP
//     (same address or a network holding it) pvelb adds nothing;
//   - a VM's ipfilter set is created only when the VIP could not pass otherwise
//     (VM option ipfilter on). With the classic firewall an existing set is what
//     turns filtering on, so a new set is first seeded with the VM's own
//     addresses, marked as seeds;
//   - seed entries are never removed: once the set exists, removing them could
//     cut the VM off, and pvelb cannot know whether a user came to rely on them.
//     When the VM's addresses change, the new ones are seeded too;
//   - no entry of pvelb's is removed while it is the only entry admitting one
//     of the VM's own addresses.
//
// Creating a set only when ipfilter is on never narrows what passes: with
// ipfilter on and no set, Proxmox already filters the NIC to link-local
// (classic firewall) or link-local plus the NIC's configured ip/ip6
// (nftables); the seeded set admits the VM's own addresses on top. With
// ipfilter off and no set nothing is filtered, so nothing is written
// (SetFilterInactive). The reconciler does not check that a configured NIC
// exists on the VM: list only NICs the nodes' VMs have.
package firewall

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/pvelb/pvelb/provider/pve"
)

// Want is one entry pvelb wants in a set.
type Want struct {
	Prefix  netip.Prefix
	Comment string
}

// SetInput is what the planner knows about one IPSet.
type SetInput struct {
	// Name of the set, e.g. "pvelb-vips" or "ipfilter-net0".
	Name string
	// VMFilter is true for a VM's ipfilter-netX set, false for the cluster set.
	VMFilter bool
	// Want is every entry pvelb wants in the set.
	Want []Want
	// OwnAddrs are the VM's own addresses (VMFilter only): seeded into a set
	// pvelb creates, and never left without an entry admitting them.
	OwnAddrs []netip.Addr

	// Exists says whether the set exists; Entries are its entries as read.
	Exists  bool
	Entries []pve.IPSetEntry
	// IPFilter is the VM firewall option ipfilter (VMFilter only).
	IPFilter bool
}

// ActionKind is the kind of one Proxmox write.
type ActionKind string

const (
	ActionCreateSet     ActionKind = "create-set"
	ActionAdd           ActionKind = "add"
	ActionUpdateComment ActionKind = "update"
	ActionDelete        ActionKind = "delete"
)

// Action is one write, in the order it must be made.
type Action struct {
	Kind ActionKind
	// CIDR is the entry's cidr as Proxmox stores it (for deletes: exactly the
	// stored string, since Proxmox deletes by string comparison).
	CIDR    string
	Comment string
	// Digest is the set's digest when it was read (deletes and updates).
	Digest string
	// Seed marks an add of one of the VM's own addresses.
	Seed bool
}

// SetState is the outcome for one set.
type SetState string

const (
	// SetInSync: nothing to write.
	SetInSync SetState = "InSync"
	// SetChanged: writes are (or were) needed.
	SetChanged SetState = "Changed"
	// SetFilterInactive: the VM has no such set and its ipfilter option is off,
	// so Proxmox does not filter the NIC's source addresses: the VIPs pass
	// without an entry and nothing is written.
	SetFilterInactive SetState = "FilterInactive"
	// SetRefused: the set would have to be created but pvelb does not know the
	// VM's own addresses; creating it would cut the VM off.
	SetRefused SetState = "Refused"
	// SetFailed: a Proxmox call failed (reconciler only).
	SetFailed SetState = "Failed"
)

// Plan is what has to happen to one set.
type Plan struct {
	State   SetState
	Actions []Action
	// Notes explain decisions worth a log line (a user entry already admits a
	// VIP, a stale entry kept because it admits the VM's own address, ...).
	Notes []string
	// Refusal says why State is SetRefused.
	Refusal string
	// Admits are the wanted prefixes the set lets through once Actions are
	// made: all of them, except one a user's nomatch entry for exactly that
	// prefix keeps out. Empty for a set that is missing (FilterInactive:
	// nothing is filtered; Refused: everything but the VM's link-local and
	// configured addresses is).
	Admits []netip.Prefix
}

type observedEntry struct {
	pve.IPSetEntry
	prefix netip.Prefix
	parsed bool
	ours   bool
	seed   bool
}

// PlanSet computes the writes that bring one set from its observed to its
// desired state. It is pure: same input, same plan.
func PlanSet(in SetInput) Plan {
	want := uniqueWants(in.Want)
	own := uniqueAddrs(in.OwnAddrs)
	if !in.Exists {
		return planMissingSet(in, want, own)
	}

	var p Plan
	entries := make([]observedEntry, 0, len(in.Entries))
	digest := ""
	hasSeed := false
	for _, e := range in.Entries {
		oe := observedEntry{IPSetEntry: e, ours: IsOurs(e.Comment), seed: IsSeed(e.Comment)}
		oe.prefix, oe.parsed = ParseCIDR(e.CIDR)
		entries = append(entries, oe)
		if e.Digest != "" {
			digest = e.Digest
		}
		hasSeed = hasSeed || oe.seed
	}

	var seeds, adds, updates, deletes []Action
	if in.VMFilter && hasSeed {
		// pvelb created this set: keep every current own address admitted, so a
		// changed VM address is not cut off by pvelb's own set.
		for _, a := range own {
			hp := hostPrefix(a)
			if admitsAny(entries, hp) {
				continue
			}
			seeds = append(seeds, Action{Kind: ActionAdd, CIDR: FormatCIDR(hp), Comment: SeedComment, Seed: true})
		}
	}

	wanted := make(map[netip.Prefix]bool, len(want))
	for _, w := range want {
		wanted[w.Prefix] = true
		cidr := FormatCIDR(w.Prefix)
		if e := findExact(entries, w.Prefix); e != nil {
			switch {
			case e.seed:
				// One of the VM's own addresses: admitted already; seeds keep their comment.
			case e.ours && (e.Comment != w.Comment || e.NoMatch):
				// The update writes nomatch off: admitted afterwards.
				updates = append(updates, Action{Kind: ActionUpdateComment, CIDR: e.CIDR, Comment: w.Comment, Digest: digest})
			case !e.ours && e.NoMatch:
				p.Notes = append(p.Notes, fmt.Sprintf("%s: user entry %q excludes it (nomatch); left as is", cidr, e.CIDR))
				continue // not admitted: the announcer must not elect this VM's node
			}
			p.Admits = append(p.Admits, w.Prefix)
			continue
		}
		p.Admits = append(p.Admits, w.Prefix)
		if u := coveredByUser(entries, w.Prefix); u != nil {
			p.Notes = append(p.Notes, fmt.Sprintf("%s: already admitted by user entry %q", cidr, u.CIDR))
			continue
		}
		adds = append(adds, Action{Kind: ActionAdd, CIDR: cidr, Comment: w.Comment})
	}

	// Stale entries of ours. Each is removed unless it is the last one
	// admitting one of the VM's own addresses.
	removed := make(map[int]bool)
	for i, e := range entries {
		if !e.ours || e.seed || (e.parsed && wanted[e.prefix]) {
			continue
		}
		removed[i] = true
		if in.VMFilter && e.parsed && !e.NoMatch {
			if a, cut := cutsOff(entries, removed, own, i, seeds, adds); cut {
				delete(removed, i)
				p.Notes = append(p.Notes, fmt.Sprintf("%s: kept although no longer wanted: it is the only entry admitting the VM's own address %s", e.CIDR, a))
				continue
			}
		}
		deletes = append(deletes, Action{Kind: ActionDelete, CIDR: e.CIDR, Digest: digest})
	}

	// Adds before deletes: a set never holds fewer admitted addresses midway.
	p.Actions = slices.Concat(seeds, adds, updates, deletes)
	p.State = SetInSync
	if len(p.Actions) > 0 {
		p.State = SetChanged
	}
	return p
}

func planMissingSet(in SetInput, want []Want, own []netip.Addr) Plan {
	if !in.VMFilter {
		// The cluster set filters nothing by itself; it exists so that users'
		// rules can reference it even before the first VIP.
		p := Plan{State: SetChanged, Actions: []Action{{Kind: ActionCreateSet, Comment: ClusterSetComment}}}
		for _, w := range want {
			p.Actions = append(p.Actions, Action{Kind: ActionAdd, CIDR: FormatCIDR(w.Prefix), Comment: w.Comment})
			p.Admits = append(p.Admits, w.Prefix)
		}
		return p
	}
	if len(want) == 0 {
		return Plan{State: SetInSync}
	}
	if !in.IPFilter {
		return Plan{State: SetFilterInactive, Notes: []string{
			fmt.Sprintf("%s does not exist and the VM option ipfilter is off: source addresses are not filtered, nothing to admit", in.Name)}}
	}
	if len(own) == 0 {
		return Plan{State: SetRefused, Refusal: fmt.Sprintf(
			"the VM option ipfilter is on and %s does not exist; creating it needs the VM's own addresses first "+
				"(else it would cut the VM off), and none are known (Node addresses or guest agent)", in.Name)}
	}
	p := Plan{State: SetChanged, Actions: []Action{{Kind: ActionCreateSet, Comment: VMSetComment}}}
	seeded := make(map[netip.Prefix]bool, len(own))
	for _, a := range own {
		hp := hostPrefix(a)
		seeded[hp] = true
		p.Actions = append(p.Actions, Action{Kind: ActionAdd, CIDR: FormatCIDR(hp), Comment: SeedComment, Seed: true})
	}
	for _, w := range want {
		p.Admits = append(p.Admits, w.Prefix)
		if seeded[w.Prefix] {
			continue
		}
		p.Actions = append(p.Actions, Action{Kind: ActionAdd, CIDR: FormatCIDR(w.Prefix), Comment: w.Comment})
	}
	return p
}

func findExact(entries []observedEntry, p netip.Prefix) *observedEntry {
	for i := range entries {
		if entries[i].parsed && entries[i].prefix == p {
			return &entries[i]
		}
	}
	return nil
}

// coveredByUser returns a user entry (not pvelb's, not nomatch) holding all of
// target. pvelb's own broader entries do not count: they may be stale (e.g.
// after leaving admit-ranges mode) and are about to be removed.
func coveredByUser(entries []observedEntry, target netip.Prefix) *observedEntry {
	for i := range entries {
		e := &entries[i]
		if e.parsed && !e.NoMatch && !e.ours && covers(e.prefix, target) {
			return e
		}
	}
	return nil
}

func admitsAny(entries []observedEntry, target netip.Prefix) bool {
	for _, e := range entries {
		if e.parsed && !e.NoMatch && covers(e.prefix, target) {
			return true
		}
	}
	return false
}

// cutsOff reports whether removing entries[i] (with the removals already
// decided) leaves one of own, that was admitted before, without any entry.
func cutsOff(entries []observedEntry, removed map[int]bool, own []netip.Addr, i int, planned ...[]Action) (netip.Addr, bool) {
	for _, a := range own {
		hp := hostPrefix(a)
		if !covers(entries[i].prefix, hp) {
			continue
		}
		still := false
		for j, e := range entries {
			if j != i && !removed[j] && e.parsed && !e.NoMatch && covers(e.prefix, hp) {
				still = true
				break
			}
		}
		for _, acts := range planned {
			for _, act := range acts {
				if pp, ok := ParseCIDR(act.CIDR); ok && covers(pp, hp) {
					still = true
				}
			}
		}
		if !still {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func uniqueWants(in []Want) []Want {
	seen := make(map[netip.Prefix]bool, len(in))
	out := make([]Want, 0, len(in))
	for _, w := range in {
		w.Prefix = unmapPrefix(w.Prefix).Masked()
		if !w.Prefix.IsValid() || seen[w.Prefix] {
			continue
		}
		seen[w.Prefix] = true
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b Want) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

func uniqueAddrs(in []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		a = a.Unmap()
		// Link-local addresses are admitted implicitly (IPv6, MAC-derived) or
		// are useless in a filter; a zone cannot be written to Proxmox.
		if !a.IsValid() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.Zone() != "" {
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
