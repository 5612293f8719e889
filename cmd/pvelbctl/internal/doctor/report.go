// Package doctor is `pvelbctl doctor`: it checks a real cluster's pvelb setup
// (the Proxmox token and its privileges, each Node's VM, each VM's firewall
// and ipfilter IPSets, the CRDs, the pools) and says what to fix. The
// judgements (which privileges are needed, whether a NIC's IP filter would
// drop the VM's own traffic or a VIP's ARP replies, pool overlaps) are pure
// functions; check.go does the reading.
package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"

	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/provider/pve"
)

// Severity of a finding.
type Severity int

const (
	OK Severity = iota
	Warn
	Fail
)

func (s Severity) String() string {
	return [...]string{"ok", "warn", "FAIL"}[s]
}

// Finding is one line of the report.
type Finding struct {
	Severity Severity
	// Area groups findings: "proxmox lab", "node talos-w-1", "kubernetes".
	Area    string
	Message string
	// Fix says what to do; empty for OK findings.
	Fix string
}

// Report is every finding, in the order checked.
type Report struct{ Findings []Finding }

func (r *Report) add(sev Severity, area, fix, format string, args ...any) {
	r.Findings = append(r.Findings, Finding{Severity: sev, Area: area, Message: fmt.Sprintf(format, args...), Fix: fix})
}

// Problems counts findings that need action.
func (r Report) Problems() (fails, warns int) {
	for _, f := range r.Findings {
		switch f.Severity {
		case Fail:
			fails++
		case Warn:
			warns++
		}
	}
	return
}

// Render prints the report grouped by area, with the fixes.
func Render(w io.Writer, r Report) {
	area := ""
	for _, f := range r.Findings {
		if f.Area != area {
			area = f.Area
			fmt.Fprintf(w, "\n%s\n", area)
		}
		fmt.Fprintf(w, "  [%-4s] %s\n", f.Severity, f.Message)
		if f.Fix != "" {
			for _, line := range strings.Split(f.Fix, "\n") {
				fmt.Fprintf(w, "         fix: %s\n", line)
			}
		}
	}
	fails, warns := r.Problems()
	switch {
	case fails == 0 && warns == 0:
		fmt.Fprintf(w, "\nAll %d checks passed.\n", len(r.Findings))
	default:
		fmt.Fprintf(w, "\n%d problem(s), %d warning(s) in %d checks.\n", fails, warns, len(r.Findings))
	}
}

// Need is one privilege pvelb needs on one ACL path, and why.
type Need struct {
	Path, Privilege, Why string
}

// Needs says which privileges the token needs for the configured features
// on the given VMs (ACL paths /vms/<vmid>; "/vms" when none is known yet).
// pveMajor selects the guest-agent privilege: PVE 8 checks VM.Monitor,
// PVE 9 VM.GuestAgent.Audit.
func Needs(vmids []int, firewallEnabled, agentAddresses bool, pveMajor int) []Need {
	paths := make([]string, 0, len(vmids))
	for _, id := range vmids {
		paths = append(paths, fmt.Sprintf("/vms/%d", id))
	}
	if len(paths) == 0 {
		paths = []string{"/vms"}
	}
	var out []Need
	for _, p := range paths {
		out = append(out, Need{p, "VM.Audit", "list VMs, read their config, status and firewall"})
		if firewallEnabled {
			out = append(out, Need{p, "VM.Config.Network", "admit VIPs in the VM's ipfilter-netX IPSets"})
		}
		if agentAddresses {
			out = append(out, Need{p, pve.ReleaseOfMajor(pveMajor).GuestAgentPrivilege, "read addresses from the guest agent (instances.addresses: provided-and-agent)"})
		}
	}
	if firewallEnabled {
		out = append(out,
			Need{"/", "Sys.Audit", "read the cluster IPSet"},
			Need{"/", "Sys.Modify", "maintain the cluster IPSet"})
	}
	return out
}

// Missing returns the needs not met by have (ACL path -> privileges held
// there, as GET /access/permissions reports them).
func Missing(needs []Need, have map[string]map[string]bool) []Need {
	var out []Need
	for _, n := range needs {
		if !have[n.Path][n.Privilege] {
			out = append(out, n)
		}
	}
	return out
}

// GroupMissing formats missing privileges as "VM.Config.Network on /vms/101,
// /vms/102" lines, one per privilege, sorted.
func GroupMissing(missing []Need) []string {
	byPriv := map[string][]string{}
	for _, m := range missing {
		byPriv[m.Privilege] = append(byPriv[m.Privilege], m.Path)
	}
	var out []string
	for priv, paths := range byPriv {
		out = append(out, fmt.Sprintf("%s on %s", priv, strings.Join(paths, ", ")))
	}
	sort.Strings(out)
	return out
}

// NIC is what doctor knows about one VM NIC pvelb manages.
type NIC struct {
	Name string // net0
	// Present: the VM has this NIC; Firewall: its config has firewall=1.
	Present, Firewall bool
	// VMFirewall and IPFilter are the VM's firewall options enable and ipfilter.
	VMFirewall, IPFilter bool
	// SetExists says whether ipfilter-<Name> exists; Entries are its entries.
	SetExists bool
	Entries   []pve.IPSetEntry
	// OwnIPs are the VM's own addresses (its Node's InternalIPs).
	OwnIPs []netip.Addr
}

// AssessNIC judges one NIC's IP filter: whether it would drop the VM's own
// traffic, whether VIPs need pvelb's IPSet management, and says how to fix
// it. firewallManaged is the cloud config's firewall.enabled.
func AssessNIC(n NIC, firewallManaged bool, vmPath string) (Severity, string, string) {
	set := pve.IPFilterSet(n.Name)
	if !n.Present {
		return Warn, fmt.Sprintf("the VM has no %s, yet firewall.nics lists it", n.Name),
			"list the VM's NICs that carry VIPs in the cloud config's firewall.nics"
	}
	active := n.VMFirewall && n.Firewall && (n.IPFilter || n.SetExists)
	if !active {
		why := []string{}
		if !n.VMFirewall {
			why = append(why, "VM firewall off")
		}
		if !n.Firewall {
			why = append(why, n.Name+" has firewall=0")
		}
		if n.VMFirewall && n.Firewall {
			why = append(why, "ipfilter=0 and no "+set+" set")
		}
		return OK, fmt.Sprintf("IP filter inactive on %s (%s): VIPs pass; %s", n.Name, strings.Join(why, ", "), managedNote(firewallManaged, set)), ""
	}
	if !n.SetExists {
		// Only ipfilter=1 makes the filter active here.
		if firewallManaged {
			return OK, fmt.Sprintf("ipfilter=1 and no %s yet: pvelb creates it with the VM's own addresses and the VIPs", set), ""
		}
		return Fail, fmt.Sprintf("ipfilter=1 on %s but firewall management is off in the cloud config: Proxmox drops ARP replies for VIPs", n.Name),
			"set firewall.enabled: true in the cloud config (pvelb then admits each VIP), or turn ipfilter off on the VM"
	}
	var missing []string
	for _, ip := range n.OwnIPs {
		if !setHolds(n.Entries, ip) {
			missing = append(missing, ip.String())
		}
	}
	if len(missing) > 0 {
		fixes := make([]string, 0, len(missing))
		for _, ip := range missing {
			fixes = append(fixes, fmt.Sprintf("pvesh create %s/firewall/ipset/%s --cidr %s --comment 'node address'", vmPath, set, ip))
		}
		return Fail, fmt.Sprintf("%s lacks the VM's own address %s: with the IP filter on, Proxmox drops the VM's traffic from it",
			set, strings.Join(missing, ", ")), strings.Join(fixes, "\n")
	}
	if !firewallManaged {
		return Fail, fmt.Sprintf("%s is active but firewall management is off in the cloud config: Proxmox drops ARP replies for VIPs not in it", set),
			"set firewall.enabled: true in the cloud config, or add every VIP to " + set + " yourself"
	}
	ours := 0
	for _, e := range n.Entries {
		if firewall.IsOurs(e.Comment) {
			ours++
		}
	}
	return OK, fmt.Sprintf("%s holds the VM's own addresses (%d entries, %d written by pvelb)", set, len(n.Entries), ours), ""
}

func managedNote(managed bool, set string) string {
	if managed {
		return "pvelb still keeps " + set + " current, so turning the filter on later is safe"
	}
	return "firewall management is off in the cloud config"
}

// setHolds reports whether an IPSet entry (address or CIDR, not nomatch)
// covers ip.
func setHolds(entries []pve.IPSetEntry, ip netip.Addr) bool {
	for _, e := range entries {
		if e.NoMatch {
			continue
		}
		if p, err := netip.ParsePrefix(e.CIDR); err == nil && p.Contains(ip) {
			return true
		}
		if a, err := netip.ParseAddr(e.CIDR); err == nil && a == ip {
			return true
		}
	}
	return false
}

// jsonFinding is a Finding as RenderJSON writes it.
type jsonFinding struct {
	Severity string `json:"severity"` // "ok", "warn", "fail"
	Area     string `json:"area"`
	Message  string `json:"message"`
	Fix      string `json:"fix,omitempty"`
}

// RenderJSON writes every finding, in the order checked, with the counts:
// the same content as Render, for scripts and monitoring.
func RenderJSON(w io.Writer, r Report) error {
	out := struct {
		Findings []jsonFinding `json:"findings"`
		Fails    int           `json:"fails"`
		Warnings int           `json:"warnings"`
	}{Findings: []jsonFinding{}}
	for _, f := range r.Findings {
		out.Findings = append(out.Findings, jsonFinding{Severity: strings.ToLower(f.Severity.String()), Area: f.Area, Message: f.Message, Fix: f.Fix})
	}
	out.Fails, out.Warnings = r.Problems()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
