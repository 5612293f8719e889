package pvesim

import (
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/pvelb/pvelb/provider/pve"
)

type ipset struct {
	comment string
	entries []ipEntry // kept sorted by cidr string, as the .fw writer does
}

type ipEntry struct {
	cidr    string
	comment string
	nomatch bool
}

// row is the entry as the firewall config parser yields it: only defined
// values, nomatch only when set.
func (e ipEntry) row() map[string]string {
	r := map[string]string{"cidr": e.cidr}
	if e.comment != "" {
		r["comment"] = e.comment
	}
	if e.nomatch {
		r["nomatch"] = "1"
	}
	return r
}

// listDigest is copy_list_with_digest: SHA1 over the rows in order, each
// row's keys sorted and written as "key:value\n".
func listDigest(rows []map[string]string) string {
	h := sha1.New()
	for _, r := range rows {
		keys := make([]string, 0, len(r))
		for k := range r {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			h.Write([]byte(k + ":" + r[k] + "\n"))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (set *ipset) digest() string {
	rows := make([]map[string]string, len(set.entries))
	for i, e := range set.entries {
		rows[i] = e.row()
	}
	return listDigest(rows)
}

func (set *ipset) sortEntries() {
	sort.SliceStable(set.entries, func(i, j int) bool { return set.entries[i].cidr < set.entries[j].cidr })
}

func (fw *firewall) setRows() []map[string]string {
	names := make([]string, 0, len(fw.ipsets))
	for n := range fw.ipsets {
		names = append(names, n)
	}
	sort.Strings(names)
	rows := make([]map[string]string, len(names))
	for i, n := range names {
		rows[i] = map[string]string{"name": n}
		if c := fw.ipsets[n].comment; c != "" {
			rows[i]["comment"] = c
		}
	}
	return rows
}

// scopeKey maps a request to its firewall: the cluster's or the VM's. VM
// firewall calls are not proxied and do not check the VM's node, like
// Proxmox, which reads /etc/pve/firewall/<vmid>.fw.
func scopeKey(r *request) int {
	if strings.HasPrefix(r.template, "/cluster/") {
		return clusterKey
	}
	vmid, _ := strconv.Atoi(r.params["vmid"])
	return vmid
}

func noSuchIPSet(name string) error {
	return fail(http.StatusInternalServerError, "no such IPSet '%s'", name)
}

func (s *Server) listIPSets(r *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rows := s.firewallLocked(scopeKey(r)).setRows()
	digest := listDigest(rows)
	out := make([]map[string]any, len(rows))
	for i, row := range rows {
		out[i] = map[string]any{"name": row["name"], "digest": digest}
		if c, ok := row["comment"]; ok {
			out[i]["comment"] = c
		}
	}
	return out, nil
}

func (s *Server) createIPSet(r *request) (any, error) {
	// The .fw parser lowercases set names on reload: a set created as "VIPs"
	// is only found as "vips" afterwards.
	name := strings.ToLower(r.params["name"])
	comment, hasComment := r.params["comment"]
	return nil, s.withLock(r, scopeKey(r), func(fw *firewall) error {
		old, renaming := r.params["rename"]
		if !renaming {
			if fw.ipsets[name] != nil {
				return paramError(map[string]string{"name": "IPSet '" + name + "' already exists"})
			}
			fw.ipsets[name] = &ipset{comment: comment}
			return nil
		}
		if err := checkDigest(listDigest(fw.setRows()), r.params["digest"]); err != nil {
			return err
		}
		set := fw.ipsets[old]
		if set == nil {
			return paramError(map[string]string{"name": "IPSet '" + old + "' does not exist"})
		}
		if fw.ipsets[name] != nil && name != old {
			return paramError(map[string]string{"name": "IPSet '" + name + "' already exists"})
		}
		delete(fw.ipsets, old)
		if hasComment {
			set.comment = comment
		}
		fw.ipsets[name] = set
		return nil
	})
}

func (s *Server) deleteIPSet(r *request) (any, error) {
	name := r.params["name"]
	return nil, s.withLock(r, scopeKey(r), func(fw *firewall) error {
		set := fw.ipsets[name]
		if set == nil {
			return noSuchIPSet(name)
		}
		if len(set.entries) > 0 && r.params["force"] != "1" {
			return fail(http.StatusInternalServerError, "IPSet '%s' is not empty", name)
		}
		delete(fw.ipsets, name)
		return nil
	})
}

func entryJSON(e ipEntry, digest string) map[string]any {
	m := map[string]any{"cidr": e.cidr, "digest": digest}
	if e.comment != "" {
		m["comment"] = e.comment
	}
	if e.nomatch {
		m["nomatch"] = 1
	}
	return m
}

func (s *Server) listEntries(r *request) (any, error) {
	name := r.params["name"]
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.firewallLocked(scopeKey(r)).ipsets[name]
	if set == nil {
		return nil, noSuchIPSet(name)
	}
	digest := set.digest()
	out := make([]map[string]any, len(set.entries))
	for i, e := range set.entries {
		out[i] = entryJSON(e, digest)
	}
	return out, nil
}

var aliasRe = regexp.MustCompile(`^(?:dc/|guest/)?[A-Za-z][A-Za-z0-9\-_]+$`)

// NormalizeCIDR stores a cidr as the firewall does: host bits zeroed when a
// length is given, then /32 or /128 stripped. An address without length is
// kept as written. A zero length is refused.
func NormalizeCIDR(cidr string) (string, error) {
	addr, bits, hasLen := strings.Cut(cidr, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return "", err
	}
	if !hasLen {
		return cidr, nil
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > a.BitLen() {
		return "", strconv.ErrRange
	}
	if n == 0 {
		return "", errZeroPrefix
	}
	p := netip.PrefixFrom(a, n).Masked()
	if n == a.BitLen() {
		return p.Addr().String(), nil
	}
	return p.String(), nil
}

type zeroPrefixError struct{}

func (zeroPrefixError) Error() string { return "a zero prefix is not allowed in ipset entries" }

var errZeroPrefix error = zeroPrefixError{}

func (s *Server) addEntry(r *request) (any, error) {
	name := r.params["name"]
	cidr := r.params["cidr"]
	if aliasRe.MatchString(cidr) {
		// The simulator keeps no firewall aliases, so every alias is unknown.
		alias := cidr[strings.LastIndex(cidr, "/")+1:]
		return nil, fail(http.StatusInternalServerError, "no such alias '%s'", alias)
	}
	norm, err := NormalizeCIDR(cidr)
	if err != nil {
		if err == errZeroPrefix {
			return nil, paramError(map[string]string{"cidr": err.Error()})
		}
		return nil, paramError(map[string]string{"cidr": "value does not look like a valid IP address or CIDR network"})
	}
	return nil, s.withLock(r, scopeKey(r), func(fw *firewall) error {
		set := fw.ipsets[name]
		if set == nil {
			return noSuchIPSet(name)
		}
		for _, e := range set.entries {
			if e.cidr == norm {
				return paramError(map[string]string{"cidr": "address '" + norm + "' already exists"})
			}
		}
		set.entries = append(set.entries, ipEntry{cidr: norm, comment: r.params["comment"], nomatch: r.params["nomatch"] == "1"})
		set.sortEntries()
		return nil
	})
}

func (s *Server) getEntry(r *request) (any, error) {
	name, cidr := r.params["name"], r.params["cidr"]
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.firewallLocked(scopeKey(r)).ipsets[name]
	if set == nil {
		return nil, noSuchIPSet(name)
	}
	for _, e := range set.entries {
		if e.cidr == cidr {
			return entryJSON(e, set.digest()), nil
		}
	}
	return nil, fail(http.StatusInternalServerError, "no such IP/Network")
}

// ipsetToChange is the IPSet an entry update or delete changes: it must
// exist, and a given digest must still match it, as Proxmox checks both
// before touching an entry (assert_if_modified).
func (fw *firewall) ipsetToChange(name, digest string) (*ipset, error) {
	set := fw.ipsets[name]
	if set == nil {
		return nil, noSuchIPSet(name)
	}
	if err := checkDigest(set.digest(), digest); err != nil {
		return nil, err
	}
	return set, nil
}

func (s *Server) updateEntry(r *request) (any, error) {
	name, cidr := r.params["name"], r.params["cidr"]
	return nil, s.withLock(r, scopeKey(r), func(fw *firewall) error {
		set, err := fw.ipsetToChange(name, r.params["digest"])
		if err != nil {
			return err
		}
		for i := range set.entries {
			if set.entries[i].cidr == cidr {
				// update_ip overwrites both fields: an omitted one is cleared.
				set.entries[i].comment = r.params["comment"]
				set.entries[i].nomatch = r.params["nomatch"] == "1"
				return nil
			}
		}
		return fail(http.StatusInternalServerError, "no such IP/Network")
	})
}

func (s *Server) deleteEntry(r *request) (any, error) {
	name, cidr := r.params["name"], r.params["cidr"]
	return nil, s.withLock(r, scopeKey(r), func(fw *firewall) error {
		set, err := fw.ipsetToChange(name, r.params["digest"])
		if err != nil {
			return err
		}
		// The path's cidr is compared to the stored string exactly; a miss
		// (e.g. "192.0.2.5/32" for a stored "192.0.2.5") removes nothing and
		// still succeeds.
		kept := set.entries[:0]
		for _, e := range set.entries {
			if e.cidr != cidr {
				kept = append(kept, e)
			}
		}
		set.entries = kept
		return nil
	})
}

func keyOf(scope pve.Scope) int {
	if scope.VM == nil {
		return clusterKey
	}
	return scope.VM.VMID
}

// IPSetEntries reads a set's entries directly (for assertions), sorted as
// Proxmox lists them, each with the set's digest. Nil when the set is absent.
func (s *Server) IPSetEntries(scope pve.Scope, name string) []pve.IPSetEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	fw := s.firewalls[keyOf(scope)]
	if fw == nil || fw.ipsets[name] == nil {
		return nil
	}
	set := fw.ipsets[name]
	digest := set.digest()
	out := make([]pve.IPSetEntry, 0, len(set.entries))
	for _, e := range set.entries {
		out = append(out, pve.IPSetEntry{CIDR: e.cidr, Comment: e.comment, NoMatch: e.nomatch, Digest: digest})
	}
	return out
}

// IPSetNames lists a scope's sets (for assertions).
func (s *Server) IPSetNames(scope pve.Scope) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	fw := s.firewalls[keyOf(scope)]
	if fw == nil {
		return nil
	}
	var out []string
	for _, row := range fw.setRows() {
		out = append(out, row["name"])
	}
	return out
}

// SeedIPSet creates a set (lowercased, as the parser would) if needed and
// adds entries that are not there yet, normalised; e.g. a user's own entries
// that pvelb must leave alone. Invalid CIDRs panic: they are test bugs.
func (s *Server) SeedIPSet(scope pve.Scope, name string, entries ...pve.IPSetEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fw := s.firewallLocked(keyOf(scope))
	name = strings.ToLower(name)
	set := fw.ipsets[name]
	if set == nil {
		set = &ipset{}
		fw.ipsets[name] = set
	}
next:
	for _, e := range entries {
		norm, err := NormalizeCIDR(e.CIDR)
		if err != nil {
			panic("pvesim.SeedIPSet: cidr " + e.CIDR + ": " + err.Error())
		}
		for _, have := range set.entries {
			if have.cidr == norm {
				continue next
			}
		}
		set.entries = append(set.entries, ipEntry{cidr: norm, comment: e.Comment, nomatch: e.NoMatch})
	}
	set.sortEntries()
}
