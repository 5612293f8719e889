package pve

import (
	"strings"
	"testing"
)

func TestNormalizeCIDR(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "192.0.2.5", want: "192.0.2.5"},
		{in: " 192.0.2.5 ", want: "192.0.2.5"},
		{in: "192.0.2.5/32", want: "192.0.2.5"},
		{in: "192.0.2.5/24", want: "192.0.2.0/24"},
		{in: "198.51.100.130/25", want: "198.51.100.128/25"},
		{in: "203.0.113.0/24", want: "203.0.113.0/24"},
		{in: "192.0.2.1/31", want: "192.0.2.0/31"},
		{in: "2001:db8::1", want: "2001:db8::1"},
		{in: "2001:DB8:0:0::1/128", want: "2001:db8::1"},
		{in: "2001:db8::1/64", want: "2001:db8::/64"},
		{in: "2001:db8:0000:0000:0000:0000:0000:0010/124", want: "2001:db8::10/124"},
		{in: "::ffff:192.0.2.7", want: "192.0.2.7"},
		{in: "::ffff:192.0.2.7/128", want: "192.0.2.7"},
		{in: "::ffff:192.0.2.7/120", want: "192.0.2.0/24"},
		{in: "::ffff:192.0.2.7/64", wantErr: "shorter than /96"},
		{in: "0.0.0.0/0", wantErr: "/0"},
		{in: "::/0", wantErr: "/0"},
		{in: "::ffff:0.0.0.0/96", wantErr: "/0"},
		{in: "", wantErr: "empty"},
		{in: "192.0.2.256", wantErr: "not an IP"},
		{in: "192.0.2.0/33", wantErr: "not an IP"},
		{in: "vips", wantErr: "not an IP"},
		{in: "fe80::1%eth0", wantErr: "zone"},
		{in: "192.0.2.1/24/1", wantErr: "not an IP"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeCIDR(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NormalizeCIDR(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeCIDR(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			// Normal form is a fixed point.
			again, err := NormalizeCIDR(got)
			if err != nil || again != got {
				t.Fatalf("NormalizeCIDR(%q) = %q, %v; not idempotent", got, again, err)
			}
		})
	}
}

func TestCIDRSegmentEscapesSlash(t *testing.T) {
	tests := map[string]string{
		"192.0.2.9/32":  "192.0.2.9",
		"192.0.2.9/24":  "192.0.2.0%2F24",
		"2001:db8::/48": "2001:db8::%2F48",
	}
	for in, want := range tests {
		got, err := cidrSegment(in)
		if err != nil || got != want {
			t.Errorf("cidrSegment(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestValidateIPSetName(t *testing.T) {
	good := []string{"pvelb-vips", "ipfilter-net0", "ab", "a_b-c9", "a" + strings.Repeat("b", 63)}
	bad := []string{"", "a", "VIPs", "9abc", "-abc", "a b", "a/b", "a" + strings.Repeat("b", 64)}
	for _, n := range good {
		if err := ValidateIPSetName(n); err != nil {
			t.Errorf("ValidateIPSetName(%q) = %v; want nil", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateIPSetName(n); err == nil {
			t.Errorf("ValidateIPSetName(%q) = nil; want error", n)
		}
	}
}

func TestValidateVMRef(t *testing.T) {
	if err := validateVMRef(VMRef{Node: "pve1", VMID: 100}); err != nil {
		t.Fatal(err)
	}
	for _, vm := range []VMRef{{Node: "", VMID: 100}, {Node: "pve1", VMID: 99}, {Node: "a/b", VMID: 100}, {Node: "pve1", VMID: 1000000000}} {
		if err := validateVMRef(vm); err == nil {
			t.Errorf("validateVMRef(%+v) = nil; want error", vm)
		}
	}
}

// NormalizeCIDR runs for every entry of every IPSet diff, so it should stay
// allocation-light.
func BenchmarkNormalizeCIDR(b *testing.B) {
	in := []string{"192.0.2.5/32", "198.51.100.77/24", "2001:db8::20/128", "2001:db8:1::5/48"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := NormalizeCIDR(in[i%len(in)]); err != nil {
			b.Fatal(err)
		}
	}
}
