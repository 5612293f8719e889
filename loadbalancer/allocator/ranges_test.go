package allocator

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		in          string
		first, last string
		err         string
	}{
		{in: "192.0.2.0/24", first: "192.0.2.0", last: "192.0.2.255"},
		{in: "192.0.2.7/32", first: "192.0.2.7", last: "192.0.2.7"},
		{in: "0.0.0.0/0", first: "0.0.0.0", last: "255.255.255.255"},
		{in: "2001:db8::/120", first: "2001:db8::", last: "2001:db8::ff"},
		{in: "2001:db8::/64", first: "2001:db8::", last: "2001:db8::ffff:ffff:ffff:ffff"},
		{in: "2001:db8::1/128", first: "2001:db8::1", last: "2001:db8::1"},
		{in: "192.0.2.10-192.0.2.20", first: "192.0.2.10", last: "192.0.2.20"},
		{in: " 192.0.2.10 - 192.0.2.10 ", first: "192.0.2.10", last: "192.0.2.10"},
		{in: "2001:db8::ffff-2001:db8::1:0", first: "2001:db8::ffff", last: "2001:db8::1:0"},
		{in: "192.0.2.1/24", err: "host bits set (did you mean 192.0.2.0/24?)"},
		{in: "192.0.2.0/33", err: "address \"192.0.2.0/33\""},
		{in: "192.0.2.20-192.0.2.10", err: "ends before it starts"},
		{in: "192.0.2.1-2001:db8::1", err: "mixes IPv4 and IPv6"},
		{in: "192.0.2.1", err: "must be a CIDR or a range"},
		{in: "::ffff:192.0.2.1-::ffff:192.0.2.9", err: "IPv4-mapped"},
		{in: "fe80::1%eth0-fe80::2%eth0", err: "IPv4-mapped and zoned"},
		{in: "a-b", err: "address \"a-b\""},
		{in: "", err: "must be a CIDR or a range"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRange(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.First.String() != tt.first || r.Last.String() != tt.last {
				t.Fatalf("got %s, want %s-%s", r, tt.first, tt.last)
			}
		})
	}
}

func TestParseRangesMergesAndSorts(t *testing.T) {
	rs, err := ParseRanges([]string{"2001:db8::/127", "192.0.2.10-192.0.2.20", "192.0.2.0/28", "192.0.2.21-192.0.2.21", "198.51.100.0/31", "2001:db8::2-2001:db8::3", "255.255.255.255/32"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		got = append(got, r.String())
	}
	want := []string{"192.0.2.0-192.0.2.21", "198.51.100.0-198.51.100.1", "255.255.255.255", "2001:db8::-2001:db8::3"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := ParseRanges(nil); err == nil {
		t.Fatal("empty addresses accepted")
	}
	if _, err := ParseRanges([]string{"192.0.2.0/24", "bad"}); err == nil || !strings.Contains(err.Error(), "addresses[1]") {
		t.Fatalf("err = %v, want naming addresses[1]", err)
	}
}

func TestRangeSizeAndBuggyCount(t *testing.T) {
	r := func(s string) Range {
		x, err := ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	if got := r("2001:db8::/64").size().String(); got != "18446744073709551616" {
		t.Fatalf("size /64 = %s", got)
	}
	if got := r("0.0.0.0/0").size().String(); got != "4294967296" {
		t.Fatalf("size /0 = %s", got)
	}
	// buggyIn against brute force on random small ranges.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 500; i++ {
		start := rng.Uint32N(1 << 20)
		n := rng.Uint32N(2000)
		first := netip.AddrFrom4([4]byte{192, byte(start >> 16), byte(start >> 8), byte(start)})
		last := first
		want := 0
		for j := uint32(0); ; j++ {
			if isBuggy(last) {
				want++
			}
			if j == n {
				break
			}
			last = last.Next()
		}
		if got := (Range{first, last}).buggyIn().Int64(); got != int64(want) {
			t.Fatalf("buggyIn(%s-%s) = %d, want %d", first, last, got, want)
		}
	}
	if got := r("0.0.0.0/0").buggyIn().Int64(); got != 2*(1<<24) {
		t.Fatalf("buggyIn(/0) = %d", got)
	}
}

// TestAddrSetMatchesModel drives the interval set with random operations and
// compares every answer with a plain map.
func TestAddrSetMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	base4 := netip.MustParseAddr("192.0.2.0")
	base6 := netip.MustParseAddr("2001:db8::")
	nth := func(base netip.Addr, n int) netip.Addr {
		a := base
		for range n {
			a = a.Next()
		}
		return a
	}
	var s addrSet
	model := map[netip.Addr]bool{}
	for i := 0; i < 20000; i++ {
		base := base4
		if rng.IntN(2) == 0 {
			base = base6
		}
		a := nth(base, rng.IntN(64))
		switch rng.IntN(3) {
		case 0:
			s.add(a)
			model[a] = true
		case 1:
			s.remove(a)
			delete(model, a)
		case 2:
			want := a
			for model[want] {
				want = want.Next()
			}
			if got := s.nextFree(a); got != want {
				t.Fatalf("step %d: nextFree(%s) = %s, want %s", i, a, got, want)
			}
		}
		if s.contains(a) != model[a] {
			t.Fatalf("step %d: contains(%s) = %v", i, a, !model[a])
		}
		for j := 1; j < len(s.iv); j++ {
			if !s.iv[j-1].Last.Less(s.iv[j].First) || adjacent(s.iv[j-1].Last, s.iv[j].First) {
				t.Fatalf("step %d: intervals not sorted/disjoint/merged: %v", i, s.iv)
			}
		}
	}
	// Edges of the address space.
	var e addrSet
	top := netip.MustParseAddr("255.255.255.255")
	e.add(top)
	if got := e.nextFree(top); got.IsValid() {
		t.Fatalf("nextFree past IPv4 space = %s, want invalid", got)
	}
	e.add(netip.MustParseAddr("::"))
	if len(e.iv) != 2 {
		t.Fatalf("IPv4 and IPv6 intervals merged: %v", e.iv)
	}
}
