package eligibility

import (
	"fmt"
	"net/netip"
	"strings"

	"go4.org/netipx"
	v1 "k8s.io/api/core/v1"

	"github.com/pvelb/pvelb/names"
)

// The Node annotation names.AnnotationAdmitted is written by pvelb-ccm: the addresses
// the Node's VM lets through its Proxmox IP filter as source addresses, as
// far as pvelb manages them. It is written only after the VM's ipfilter-netX
// sets were brought in line (every managed NIC's set admits what it lists),
// only when it changes, and removed from a Node whose VM pvelb cannot locate
// (no spec.providerID yet, or one naming no VM of a configured Proxmox
// cluster). A Node without it may not announce anything: its VM may drop
// the replies.
//
// The value is Unfiltered, or a comma-separated list, in address order, of
// single addresses and inclusive ranges "first-last", such as
// "192.0.2.10,192.0.2.200-192.0.2.215,2001:db8::200-2001:db8::2ff". An empty
// value admits nothing.
//
// Unfiltered is the value of names.AnnotationAdmitted when no filter applies to
// the VM: pvelb's firewall management is off (firewall.enabled: false), or
// the VM's ipfilter option is off and it has none of the managed sets.
const Unfiltered = "unfiltered"

// Admission is a parsed names.AnnotationAdmitted. The zero value admits nothing.
type Admission struct {
	unfiltered bool
	// set is what the filter admits; nil admits nothing.
	set *netipx.IPSet
}

// AdmitAll is the admission of a VM no filter applies to.
func AdmitAll() Admission { return Admission{unfiltered: true} }

// AdmitPrefixes is the admission of a VM whose filter lets exactly the given
// prefixes through (single addresses are /32 or /128 prefixes).
func AdmitPrefixes(prefixes []netip.Prefix) Admission {
	var b netipx.IPSetBuilder
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		b.AddPrefix(p.Masked())
	}
	return admitting(&b)
}

// ParseAdmission reads a names.AnnotationAdmitted value. Any malformed part makes
// the whole value an error: a value pvelb did not write is not trusted.
func ParseAdmission(s string) (Admission, error) {
	s = strings.TrimSpace(s)
	if s == Unfiltered {
		return AdmitAll(), nil
	}
	if s == "" {
		return Admission{}, nil
	}
	var b netipx.IPSetBuilder
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		firstS, lastS, isRange := strings.Cut(item, "-")
		first, err := parseAddr(firstS)
		if err != nil {
			return Admission{}, fmt.Errorf("%s %q: %w", names.AnnotationAdmitted, item, err)
		}
		last := first
		if isRange {
			if last, err = parseAddr(lastS); err != nil {
				return Admission{}, fmt.Errorf("%s %q: %w", names.AnnotationAdmitted, item, err)
			}
			if first.Is4() != last.Is4() || first.Compare(last) > 0 {
				return Admission{}, fmt.Errorf("%s %q: not a range (same family, first <= last)", names.AnnotationAdmitted, item)
			}
		}
		b.AddRange(netipx.IPRangeFrom(first, last))
	}
	return admitting(&b), nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %s has a zone", a)
	}
	return a.Unmap(), nil
}

// NodeAdmission reads the Node's names.AnnotationAdmitted. ok is false when it is
// absent or malformed; the Admission then admits nothing.
func NodeAdmission(n *v1.Node) (a Admission, ok bool) {
	v, present := n.Annotations[names.AnnotationAdmitted]
	if !present {
		return Admission{}, false
	}
	a, err := ParseAdmission(v)
	if err != nil {
		return Admission{}, false
	}
	return a, true
}

// Admits reports whether ip may be sent from by the VM.
func (a Admission) Admits(ip netip.Addr) bool {
	if a.unfiltered {
		return true
	}
	return a.set != nil && a.set.Contains(ip.Unmap().WithZone(""))
}

// IsUnfiltered reports whether no filter applies.
func (a Admission) IsUnfiltered() bool { return a.unfiltered }

// String is the annotation value: canonical, so that equal admissions are
// equal strings and pvelb-ccm can skip writing an unchanged one.
func (a Admission) String() string {
	if a.unfiltered {
		return Unfiltered
	}
	var b strings.Builder
	if a.set == nil {
		return ""
	}
	for i, r := range a.set.Ranges() {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.From().String())
		if r.To() != r.From() {
			b.WriteByte('-')
			b.WriteString(r.To().String())
		}
	}
	return b.String()
}

// admitting is the admission of what b holds: its ranges sorted and
// merged (none overlap or touch), so that String is canonical.
func admitting(b *netipx.IPSetBuilder) Admission {
	set, _ := b.IPSet() // adding addresses and ranges cannot fail
	return Admission{set: set}
}
