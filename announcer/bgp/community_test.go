package bgp

import (
	"strings"
	"testing"
)

func TestParseCommunities(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    Communities
		wantErr string
	}{
		{name: "empty", in: nil, want: Communities{}},
		{name: "standard", in: []string{"65000:100"}, want: Communities{Standard: []uint32{65000<<16 | 100}}},
		{name: "bounds", in: []string{"0:0", "65535:65535"}, want: Communities{Standard: []uint32{0, 0xFFFFFFFF}}},
		{name: "well-known names", in: []string{"no-export", "blackhole", "NO-ADVERTISE"},
			want: Communities{Standard: []uint32{0xFFFF029A, 0xFFFFFF01, 0xFFFFFF02}}},
		{name: "name and number dedupe", in: []string{"no-export", "65535:65281"}, want: Communities{Standard: []uint32{0xFFFFFF01}}},
		{name: "large sorted", in: []string{"4200000000:2:1", "4200000000:1:2", "4200000000:1:2"},
			want: Communities{Large: []LargeCommunity{{4200000000, 1, 2}, {4200000000, 2, 1}}}},
		{name: "mixed", in: []string{"1:2:3", "65000:1"}, want: Communities{Standard: []uint32{65000<<16 | 1}, Large: []LargeCommunity{{1, 2, 3}}}},
		{name: "standard part too big", in: []string{"65536:1"}, wantErr: "communities[0]: \"65536:1\": a standard community"},
		{name: "large part too big", in: []string{"ok", "4294967296:1:1"}, wantErr: "communities[0]"},
		{name: "large overflow at index", in: []string{"1:1", "4294967296:1:1"}, wantErr: "communities[1]: \"4294967296:1:1\": a large community"},
		{name: "sign rejected", in: []string{"+1:2"}, wantErr: "communities[0]"},
		{name: "empty part", in: []string{"1:"}, wantErr: "communities[0]"},
		{name: "four parts", in: []string{"1:2:3:4"}, wantErr: "must be ASN:VALUE, A:B:C or a well-known name"},
		{name: "unknown name", in: []string{"no-exprot"}, wantErr: "communities[0]: \"no-exprot\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommunities(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
