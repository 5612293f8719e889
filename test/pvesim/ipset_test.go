package pvesim

import (
	"crypto/sha1"
	"encoding/hex"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
)

func TestNormalizeCIDR(t *testing.T) {
	cases := []struct{ in, want, err string }{
		{"192.0.2.5/24", "192.0.2.0/24", ""},
		{"192.0.2.5/32", "192.0.2.5", ""},
		{"192.0.2.5", "192.0.2.5", ""},
		{"2001:db8::5/128", "2001:db8::5", ""},
		{"2001:DB8:0:0::5/64", "2001:db8::/64", ""},
		{"2001:DB8::5", "2001:DB8::5", ""}, // no length: kept as written
		{"198.51.100.77/25", "198.51.100.0/25", ""},
		{"0.0.0.0/0", "", "a zero prefix is not allowed in ipset entries"},
		{"::/0", "", "a zero prefix is not allowed in ipset entries"},
		{"192.0.2.5/33", "", "range"},
		{"nonsense", "", "ParseAddr"},
	}
	for _, c := range cases {
		got, err := NormalizeCIDR(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

// factsDigest computes the digest exactly as FIREWALL-FACTS.md states it,
// independently of the simulator's code.
func factsDigest(rows ...map[string]string) string {
	h := sha1.New()
	for _, r := range rows {
		var keys []string
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

type entryRow struct {
	CIDR    string `json:"cidr"`
	Comment string `json:"comment"`
	NoMatch int    `json:"nomatch"`
	Digest  string `json:"digest"`
}

type setRow struct {
	Name    string `json:"name"`
	Comment string `json:"comment"`
	Digest  string `json:"digest"`
}

// TestIPSetFacts runs the FIREWALL-FACTS IPSet behaviour on both scopes.
func TestIPSetFacts(t *testing.T) {
	scopes := []struct {
		name  string
		base  string
		scope pve.Scope
	}{
		{"cluster", "/cluster/firewall/ipset", pve.ClusterScope},
		{"vm", "/nodes/pve1/qemu/100/firewall/ipset", pve.VMScope(pve.VMRef{Node: "pve1", VMID: 100})},
	}
	for _, sc := range scopes {
		t.Run(sc.name, func(t *testing.T) {
			ts, c := newSim(t, Options{})
			base := sc.base

			// Names are lowercased on create; the mixed-case name is then unknown.
			c.do("POST", base, vals("name", "VIPs", "comment", "pvelb")).want(t, "200 OK")
			c.do("GET", base+"/VIPs", nil).want(t, "500 no such IPSet 'VIPs'")
			var sets []setRow
			c.do("GET", base, nil).want(t, "200 OK").decode(t, &sets)
			if len(sets) != 1 || sets[0].Name != "vips" || sets[0].Comment != "pvelb" ||
				sets[0].Digest != factsDigest(map[string]string{"name": "vips", "comment": "pvelb"}) {
				t.Fatalf("sets %+v", sets)
			}
			r := c.do("POST", base, vals("name", "vips")).want(t, "400 Parameter verification failed.")
			if r.Errors["name"] != "IPSet 'vips' already exists" {
				t.Errorf("duplicate set errors %v", r.Errors)
			}

			// Normalisation and duplicates.
			adds := []struct{ cidr, status, errCIDR string }{
				{"192.0.2.5/24", "200 OK", ""},
				{"192.0.2.77/32", "200 OK", ""},
				{"2001:db8::1/128", "200 OK", ""},
				{"2001:db8:0:0:1::5/64", "200 OK", ""},
				{"192.0.2.77", "400 Parameter verification failed.", "address '192.0.2.77' already exists"},
				{"192.0.2.9/24", "400 Parameter verification failed.", "address '192.0.2.0/24' already exists"},
				{"0.0.0.0/0", "400 Parameter verification failed.", "a zero prefix is not allowed in ipset entries"},
			}
			for _, a := range adds {
				r := c.do("POST", base+"/vips", vals("cidr", a.cidr)).want(t, a.status)
				if r.Errors["cidr"] != a.errCIDR {
					t.Errorf("add %s: errors %v, want cidr %q", a.cidr, r.Errors, a.errCIDR)
				}
			}
			c.do("POST", base+"/nope", vals("cidr", "192.0.2.1")).want(t, "500 no such IPSet 'nope'")

			want := []string{"192.0.2.0/24", "192.0.2.77", "2001:db8::/64", "2001:db8::1"} // "/" sorts before "1"
			var rows []entryRow
			c.do("GET", base+"/vips", nil).want(t, "200 OK").decode(t, &rows)
			var got []string
			var factRows []map[string]string
			for _, row := range rows {
				got = append(got, row.CIDR)
				factRows = append(factRows, map[string]string{"cidr": row.CIDR})
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("entries %v, want %v (sorted by cidr string)", got, want)
			}
			digest := factsDigest(factRows...)
			for _, row := range rows {
				if row.Digest != digest {
					t.Fatalf("row digest %s, want %s for every row", row.Digest, digest)
				}
			}
			if d := ts.IPSetEntries(sc.scope, "vips"); len(d) != 4 || d[0].Digest != digest {
				t.Fatalf("direct read %+v", d)
			}

			// Delete of a non-normalised cidr is a silent success that removes nothing.
			c.do("DELETE", base+"/vips/192.0.2.77/32", nil).want(t, "200 OK")
			if n := len(ts.IPSetEntries(sc.scope, "vips")); n != 4 {
				t.Fatalf("non-normalised delete removed something: %d entries", n)
			}
			// A stale digest is refused.
			c.do("DELETE", base+"/vips/192.0.2.77", vals("digest", factsDigest())).
				want(t, "500 detected modified configuration - file changed by other user? Try again.")
			// The right digest and the stored form remove the entry; %2F works too.
			c.do("DELETE", base+"/vips/192.0.2.77", vals("digest", digest)).want(t, "200 OK")
			c.do("DELETE", base+"/vips/192.0.2.0%2F24", nil).want(t, "200 OK")
			if e := ts.IPSetEntries(sc.scope, "vips"); len(e) != 2 || e[1].CIDR != "2001:db8::1" {
				t.Fatalf("after deletes: %+v", e)
			}

			// PUT overwrites comment and nomatch together.
			c.do("PUT", base+"/vips/2001:db8::1", vals("comment", "c1", "nomatch", "1")).want(t, "200 OK")
			var one entryRow
			c.do("GET", base+"/vips/2001:db8::1", nil).want(t, "200 OK").decode(t, &one)
			if one.Comment != "c1" || one.NoMatch != 1 ||
				one.Digest != factsDigest(map[string]string{"cidr": "2001:db8::/64"}, map[string]string{"cidr": "2001:db8::1", "comment": "c1", "nomatch": "1"}) {
				t.Fatalf("after put: %+v", one)
			}
			c.do("PUT", base+"/vips/2001:db8::1", vals("comment", "c2")).want(t, "200 OK")
			if e := ts.IPSetEntries(sc.scope, "vips"); e[1].Comment != "c2" || e[1].NoMatch {
				t.Fatalf("put did not clear nomatch: %+v", e)
			}
			c.do("PUT", base+"/vips/2001:db8::99", vals("comment", "x")).want(t, "500 no such IP/Network")
			c.do("GET", base+"/vips/192.0.2.200", nil).want(t, "500 no such IP/Network")

			// Rename checks the set-list digest.
			c.do("POST", base, vals("name", "new", "rename", "vips", "digest", factsDigest())).
				want(t, "500 detected modified configuration - file changed by other user? Try again.")
			c.do("POST", base, vals("name", "VIPS2", "rename", "vips")).want(t, "200 OK")
			if n := ts.IPSetNames(sc.scope); !reflect.DeepEqual(n, []string{"vips2"}) {
				t.Fatalf("after rename: %v", n)
			}
			r = c.do("POST", base, vals("name", "x2", "rename", "gone")).want(t, "400 Parameter verification failed.")
			if r.Errors["name"] != "IPSet 'gone' does not exist" {
				t.Errorf("rename missing: %v", r.Errors)
			}

			// A non-empty set needs force.
			c.do("DELETE", base+"/vips2", nil).want(t, "500 IPSet 'vips2' is not empty")
			c.do("DELETE", base+"/vips2", vals("force", "1")).want(t, "200 OK")
			c.do("DELETE", base+"/vips2", nil).want(t, "500 no such IPSet 'vips2'")
			if ts.IPSetEntries(sc.scope, "vips2") != nil {
				t.Fatal("set still present")
			}
		})
	}
}

func TestIPSetJSONBodyAndAlias(t *testing.T) {
	ts, c := newSim(t, Options{})
	ts.SeedIPSet(pve.ClusterScope, "pvelb-vips", pve.IPSetEntry{CIDR: "203.0.113.0/24", Comment: "user"})
	c.doJSON("POST", "/cluster/firewall/ipset/pvelb-vips", map[string]any{"cidr": "198.51.100.7/32", "comment": "svc", "nomatch": false}).want(t, "200 OK")
	c.do("POST", "/cluster/firewall/ipset/pvelb-vips", vals("cidr", "dc/myalias")).want(t, "500 no such alias 'myalias'")
	got := ts.IPSetEntries(pve.ClusterScope, "pvelb-vips")
	if len(got) != 2 || got[0].CIDR != "198.51.100.7" || got[0].Comment != "svc" || got[1].Comment != "user" {
		t.Fatalf("entries %+v", got)
	}
}

func TestFirewallOptions(t *testing.T) {
	ts, c := newSim(t, Options{})
	ts.SetFirewallOptions(100, true, false)
	var opts map[string]any
	c.do("GET", "/nodes/pve1/qemu/100/firewall/options", nil).want(t, "200 OK").decode(t, &opts)
	digest := factsDigest(map[string]string{"enable": "1", "ipfilter": "0"})
	if opts["enable"] != float64(1) || opts["ipfilter"] != float64(0) || opts["digest"] != digest {
		t.Fatalf("options %v, want digest %s", opts, digest)
	}
	c.do("PUT", "/nodes/pve1/qemu/100/firewall/options", vals("ipfilter", "1", "digest", factsDigest())).
		want(t, "500 detected modified configuration - file changed by other user? Try again.")
	c.do("PUT", "/nodes/pve1/qemu/100/firewall/options", vals("ipfilter", "1", "delete", "enable", "digest", digest)).want(t, "200 OK")
	if o := ts.FirewallOptions(100); !reflect.DeepEqual(o, map[string]string{"ipfilter": "1"}) {
		t.Fatalf("options %v", o)
	}
	c.do("PUT", "/nodes/pve1/qemu/100/firewall/options", vals("ipfilter", "true")).want(t, "400 Parameter verification failed.")
	c.do("PUT", "/nodes/pve1/qemu/100/firewall/options", url.Values{"delete": {"nosuch"}}).want(t, "400 Parameter verification failed.")
}
