package eligibility

import (
	"net/netip"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestAdmitPrefixesString(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []netip.Prefix
		want string
	}{
		{"nothing", nil, ""},
		{"one address", prefixes("192.0.2.10/32"), "192.0.2.10"},
		{"consecutive addresses become a range", prefixes("192.0.2.12/32", "192.0.2.10/32", "192.0.2.11/32"), "192.0.2.10-192.0.2.12"},
		{"gaps stay apart", prefixes("192.0.2.10/32", "192.0.2.12/32"), "192.0.2.10,192.0.2.12"},
		{"admit-ranges CIDRs of one pool range", prefixes("192.0.2.200/29", "192.0.2.208/30"), "192.0.2.200-192.0.2.211"},
		{"address inside a CIDR", prefixes("192.0.2.0/24", "192.0.2.7/32"), "192.0.2.0-192.0.2.255"},
		{"IPv4 before IPv6", prefixes("2001:db8::1/128", "2001:db8::2/128", "198.51.100.1/32"), "198.51.100.1,2001:db8::1-2001:db8::2"},
		{"families never join", prefixes("255.255.255.255/32", "::/128"), "255.255.255.255,::"},
		{"last address of the family", prefixes("255.255.255.254/31", "255.255.255.0/32"), "255.255.255.0,255.255.255.254-255.255.255.255"},
		{"IPv4-mapped IPv6 is IPv4", prefixes("::ffff:192.0.2.1/128"), "192.0.2.1"},
		{"host bits ignored", prefixes("192.0.2.9/30"), "192.0.2.8-192.0.2.11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := AdmitPrefixes(tc.in)
			if got := a.String(); got != tc.want {
				t.Fatalf("String() = %q, want %q", got, tc.want)
			}
			back, err := ParseAdmission(a.String())
			if err != nil || back.String() != tc.want {
				t.Errorf("round trip: %q, %v", back.String(), err)
			}
		})
	}
	if got := AdmitAll().String(); got != Unfiltered {
		t.Errorf("AdmitAll() = %q, want %q", got, Unfiltered)
	}
}

func TestAdmits(t *testing.T) {
	a, err := ParseAdmission("192.0.2.10, 192.0.2.200-192.0.2.215,2001:db8::200-2001:db8::2ff")
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{
		"192.0.2.10":             true,
		"192.0.2.11":             false,
		"192.0.2.199":            false,
		"192.0.2.200":            true,
		"192.0.2.207":            true,
		"192.0.2.215":            true,
		"192.0.2.216":            false,
		"2001:db8::200":          true,
		"2001:db8::2ff":          true,
		"2001:db8::300":          false,
		"::ffff:192.0.2.10":      true,
		"0.0.0.0":                false,
		"ffff:ffff::":            false,
		"::c000:20a":             false, // 192.0.2.10's bits in IPv6: another family
		"2001:db8::1ff":          false,
		"192.0.2.201":            true,
		"198.51.100.1":           false,
		"2001:db8::250%eth0":     true,
		"255.255.255.255":        false,
		"::":                     false,
		"2001:db8:ffff::ffff:ff": false,
	} {
		if got := a.Admits(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Admits(%s) = %v, want %v", ip, got, want)
		}
	}
	var none Admission
	if none.Admits(netip.MustParseAddr("192.0.2.10")) {
		t.Error("the zero Admission admits something")
	}
	if !AdmitAll().Admits(netip.MustParseAddr("2001:db8::1")) {
		t.Error("AdmitAll does not admit an address")
	}
}

func TestParseAdmissionRefusesMalformed(t *testing.T) {
	for _, s := range []string{
		"bogus",
		"192.0.2.1,",
		"192.0.2.10-192.0.2.1",
		"192.0.2.1-2001:db8::1",
		"192.0.2.0/24",
		"fe80::1%eth0",
		"192.0.2.1-",
		"*",
	} {
		if _, err := ParseAdmission(s); err == nil {
			t.Errorf("ParseAdmission(%q) accepted", s)
		}
	}
}
