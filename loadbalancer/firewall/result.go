package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/pvelb/pvelb/provider/pve"
)

// Result is the outcome of one reconcile pass.
type Result struct {
	// NotReady is true when no desired state was set yet, so nothing was
	// touched: reconciling an empty desired state would remove every VIP.
	NotReady bool
	// Scopes holds one result per Proxmox cluster set and per VM, ordered by
	// region, then cluster before VMs, then VM id.
	Scopes []ScopeResult
}

// ScopeResult is the outcome for one scope: a region's cluster-level set, or
// the ipfilter sets of one VM.
type ScopeResult struct {
	Region string
	// VM is nil for the cluster-level scope.
	VM   *VMInfo
	Sets []SetResult
	// Services are the Services ("namespace/name") whose VIPs this scope
	// carries: the ones to tell when it failed.
	Services []string
	// Err joins the sets' errors (each an *Error); nil on success.
	Err error
	// Admission is, for a VM scope, what every one of the VM's managed
	// ipfilter sets lets through; nil when that is not known (a set failed
	// and none of its passes since start succeeded). Always nil for the
	// cluster scope and for retired VMs.
	Admission *Admission
}

// Admission is what a VM's ipfilter sets let through, of what pvelb wants
// in them. pvelb-ccm publishes it on the VM's Node (pvelb.io/admitted) so
// that the announcer elects a node only where its VM admits the VIP.
type Admission struct {
	// Unfiltered is true when no set filters: each is missing and the VM's
	// ipfilter option is off, so every source address passes.
	Unfiltered bool
	// Prefixes are the wanted entries (single VIPs, or pool CIDRs in
	// admit-ranges mode) that the sets admit, sorted.
	Prefixes []netip.Prefix
}

// intersect is what both a and b admit; nil (unknown) if either is.
func intersect(a, b *Admission) *Admission {
	switch {
	case a == nil || b == nil:
		return nil
	case a.Unfiltered:
		return b
	case b.Unfiltered:
		return a
	}
	out := &Admission{Prefixes: []netip.Prefix{}}
	for _, p := range a.Prefixes {
		if slices.Contains(b.Prefixes, p) {
			out.Prefixes = append(out.Prefixes, p)
		}
	}
	return out
}

// narrowTo keeps of a only the prefixes still wanted: what a failed pass
// reports for a set, from what the set admitted after its last good pass.
// A prefix no longer wanted may already be deleted.
func (a *Admission) narrowTo(want []Want) *Admission {
	if a == nil || a.Unfiltered {
		return a
	}
	out := &Admission{Prefixes: []netip.Prefix{}}
	for _, p := range a.Prefixes {
		if slices.ContainsFunc(want, func(w Want) bool { return unmapPrefix(w.Prefix).Masked() == p }) {
			out.Prefixes = append(out.Prefixes, p)
		}
	}
	return out
}

// VMInfo names a VM in results and errors.
type VMInfo struct {
	Ref pve.VMRef
	// Name is the VM's name and Node the Kubernetes Node's, when known.
	Name string
	Node string
	// Retired is true for a VM no longer in the desired state whose pvelb
	// entries are being removed.
	Retired bool
}

// SetResult is the outcome for one IPSet.
type SetResult struct {
	Name   string
	State  SetState
	Writes map[ActionKind]int
	Notes  []string
	Err    error
	// Admission is what the set lets through of what was wanted in it after
	// the pass; nil when unknown (see ScopeResult.Admission).
	Admission *Admission
}

// Err joins the errors of all failed scopes.
func (r Result) Err() error {
	var errs []error
	for _, s := range r.Scopes {
		if s.Err != nil {
			errs = append(errs, s.Err)
		}
	}
	return errors.Join(errs...)
}

// Writes is the number of Proxmox writes the pass made.
func (r Result) Writes() int {
	n := 0
	for _, s := range r.Scopes {
		for _, set := range s.Sets {
			for _, c := range set.Writes {
				n += c
			}
		}
	}
	return n
}

// Failed returns the scopes that failed.
func (r Result) Failed() []ScopeResult {
	var out []ScopeResult
	for _, s := range r.Scopes {
		if s.Err != nil {
			out = append(out, s)
		}
	}
	return out
}

// ServiceErrors maps each Service ("namespace/name") whose VIPs could not be
// admitted somewhere to the errors, each naming the VM and Proxmox's answer,
// ready for a Warning Event on the Service.
func (r Result) ServiceErrors() map[string][]error {
	out := map[string][]error{}
	for _, s := range r.Scopes {
		if s.Err == nil {
			continue
		}
		for _, svc := range s.Services {
			out[svc] = append(out[svc], s.Err)
		}
	}
	return out
}

// Set returns the result of the named set in the scope of region and vm
// (nil: the cluster scope), if the pass handled it.
func (r Result) Set(region string, vm *pve.VMRef, name string) (SetResult, bool) {
	for _, s := range r.Scopes {
		if s.Region != region || (vm == nil) != (s.VM == nil) || (vm != nil && s.VM.Ref != *vm) {
			continue
		}
		for _, set := range s.Sets {
			if set.Name == name {
				return set, true
			}
		}
	}
	return SetResult{}, false
}

// Error is a failure to reconcile one IPSet. Its message names the Proxmox
// cluster, the VM (id, host, name, Kubernetes Node), the set, the operation and
// Proxmox's answer; it never holds credentials (pve errors do not).
type Error struct {
	Region string
	VM     *VMInfo
	Set    string
	// Op is what was attempted, e.g. "add 192.0.2.10" or "read entries".
	Op string
	// Reason classifies the failure for metrics: auth, conflict, not_found,
	// transient, unsafe or other.
	Reason string
	Err    error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "proxmox cluster %q", e.Region)
	if e.VM != nil {
		fmt.Fprintf(&b, " VM %d on host %s", e.VM.Ref.VMID, e.VM.Ref.Node)
		var names []string
		if e.VM.Name != "" {
			names = append(names, "name "+e.VM.Name)
		}
		if e.VM.Node != "" {
			names = append(names, "node "+e.VM.Node)
		}
		if len(names) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(names, ", "))
		}
	}
	fmt.Fprintf(&b, ": ipset %s: %s: %v", e.Set, e.Op, e.Err)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func reasonOf(err error) string {
	var t interface{ Transient() bool }
	switch {
	case pve.IsAuth(err):
		return "auth"
	case pve.IsConflict(err):
		return "conflict"
	case pve.IsTransient(err), errors.As(err, &t) && t.Transient():
		return "transient"
	case pve.IsNotFound(err):
		return "not_found"
	}
	return "other"
}
