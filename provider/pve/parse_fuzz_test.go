package pve

import (
	"encoding/json"
	"math"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzNormalizeCIDR checks the form every IPSet cidr is sent to Proxmox in.
// A delete of a cidr not in Proxmox's stored form silently removes nothing,
// so the normal form must be a fixed point, parse as a plain address or a
// masked network of the written family, and cover the address written.
func FuzzNormalizeCIDR(f *testing.F) {
	for _, s := range []string{
		"192.0.2.5", " 192.0.2.5 ", "192.0.2.5/32", "192.0.2.5/24", "198.51.100.130/25",
		"192.0.2.1/31", "2001:db8::1", "2001:DB8:0:0::1/128", "2001:db8::1/64",
		"2001:db8:0000:0000:0000:0000:0000:0010/124", "::ffff:192.0.2.7", "::ffff:192.0.2.7/128",
		"::ffff:192.0.2.7/120", "::ffff:192.0.2.7/64", "0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96",
		"", "192.0.2.256", "192.0.2.0/33", "vips", "fe80::1%eth0", "fe80::1%eth0/64", "192.0.2.1/24/1",
		"::ffff:192.0.2.7/97", "1.2.3.4/1", "::1/1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeCIDR(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "cidr") {
				t.Fatalf("NormalizeCIDR(%q) error %q does not name the field", s, err)
			}
			return
		}
		again, err := NormalizeCIDR(n)
		if err != nil || again != n {
			t.Fatalf("NormalizeCIDR(%q) = %q; again %q, %v", s, n, again, err)
		}
		var p netip.Prefix
		if a, err := netip.ParseAddr(n); err == nil {
			p = netip.PrefixFrom(a, a.BitLen())
		} else if p, err = netip.ParsePrefix(n); err != nil {
			t.Fatalf("NormalizeCIDR(%q) = %q, neither address nor prefix", s, n)
		} else if p.Bits() == p.Addr().BitLen() || p.Masked() != p {
			t.Fatalf("NormalizeCIDR(%q) = %q: host prefix or host bits set", s, n)
		}
		if p.Addr().Is4In6() || p.Addr().Zone() != "" || p.Bits() == 0 {
			t.Fatalf("NormalizeCIDR(%q) = %q: mapped, zoned or /0", s, n)
		}
		if p.Addr().String() != p.Addr().Unmap().String() {
			t.Fatalf("NormalizeCIDR(%q) = %q: not canonical", s, n)
		}
		in := strings.TrimSpace(s)
		addr, _, _ := strings.Cut(in, "/")
		written := netip.MustParseAddr(addr).Unmap()
		if !p.Contains(written) {
			t.Fatalf("NormalizeCIDR(%q) = %q does not cover %v", s, n, written)
		}
	})
}

// FuzzParseNet feeds QEMU netN values (VM config lines, written by whoever
// administers the VM) to ParseNet. Accepted values must have a model, a
// canonical MAC or none, a VLAN tag in range or none, and must come back
// unchanged from their long form "model=...,macaddr=...".
func FuzzParseNet(f *testing.F) {
	for _, s := range []string{
		"virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1",
		"virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=0,tag=30",
		"e1000=bc:24:11:00:00:01,bridge=vmbr1",
		"model=vmxnet3,macaddr=BC:24:11:00:00:02,bridge=vmbr0,firewall=1,mtu=1500",
		"bridge=vmbr0,virtio=BC:24:11:AA:BB:CC", "virtio,bridge=vmbr0",
		"virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,newoption=x", "", "bridge=vmbr0",
		"model=virtio,macaddr=zz:zz", "virtio=BC:24:11:AA:BB:CC,tag=5000",
		"virtio=BC:24:11:AA:BB:CC,firewall", "virtio=BC:24:11:AA:BB:CC,link_down=1,queues=4,rate=10,trunks=10;20",
		"virtio=00:00:00:00:fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:00",
		"VirtIO=bc-24-11-aa-bb-cc,firewall=TRUE,tag=+7", " , virtio", "model=VirtIO,bridge= vmbr0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		nc, err := ParseNet(raw)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "net") {
				t.Fatalf("ParseNet(%q) error %q does not name the field", raw, err)
			}
			return
		}
		if nc.Model == "" {
			t.Fatalf("ParseNet(%q) = %+v without a model", raw, nc)
		}
		if nc.MAC != "" {
			hw, err := net.ParseMAC(nc.MAC)
			if err != nil || len(hw) != 6 || hw.String() != nc.MAC {
				t.Fatalf("ParseNet(%q) = %+v: MAC not canonical", raw, nc)
			}
		}
		if nc.Tag != 0 && (nc.Tag < 1 || nc.Tag > 4094) {
			t.Fatalf("ParseNet(%q) = %+v: tag out of range", raw, nc)
		}
		// The long form only round-trips when no field holds a separator.
		for _, v := range []string{nc.Model, nc.Bridge} {
			if strings.ContainsAny(v, ",= \t\n\v\f\r\u0085\u00a0") || strings.TrimSpace(v) != v {
				return
			}
		}
		long := "model=" + nc.Model
		if nc.MAC != "" {
			long += ",macaddr=" + nc.MAC
		}
		if nc.Bridge != "" {
			long += ",bridge=" + nc.Bridge
		}
		if nc.Firewall {
			long += ",firewall=1"
		}
		if nc.Tag != 0 {
			long += ",tag=" + strconv.Itoa(nc.Tag)
		}
		back, err := ParseNet(long)
		if err != nil || back != nc {
			t.Fatalf("ParseNet(%q) = %+v; long form %q parses to %+v, %v", raw, nc, long, back, err)
		}
	})
}

// FuzzParseIPSetEntries feeds IPSet listings (GET .../ipset/{name}) to the
// decoder. Rows come from Proxmox, which stores whatever any admin or tool
// wrote, so the decoder must not panic, and must decode the same bytes the
// same way every time; each row's cidr, normalised, must be a fixed point
// (pvelb compares and deletes by it).
func FuzzParseIPSetEntries(f *testing.F) {
	for _, s := range []string{
		`[{"cidr":"192.0.2.10","comment":"pvelb","nomatch":0,"digest":"abc"}]`,
		`[{"cidr":"192.0.2.0/24","nomatch":1},{"cidr":"2001:db8::/64","nomatch":"1"},{"cidr":"::ffff:192.0.2.7"}]`,
		`[{"cidr":"192.0.2.10","nomatch":true,"comment":42}]`,
		`[{"cidr":192}]`, `null`, ``, `[]`, `{}`, `[null]`, `[{"nomatch":"yes"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, err := parseIPSetEntries(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "decode response") {
				t.Fatalf("parseIPSetEntries(%q) error %q", data, err)
			}
			return
		}
		again, err := parseIPSetEntries(data)
		if err != nil || !reflect.DeepEqual(rows, again) {
			t.Fatalf("parseIPSetEntries(%q) = %+v, then %+v, %v", data, rows, again, err)
		}
		for _, r := range rows {
			if n, err := NormalizeCIDR(r.CIDR); err == nil {
				if m, err := NormalizeCIDR(n); err != nil || m != n {
					t.Fatalf("row cidr %q normalises to %q, then %q, %v", r.CIDR, n, m, err)
				}
			}
		}
	})
}

// FuzzParseVMConfig feeds VM config bodies to parseVMConfig: no panic, and
// the same bytes always decode to the same config (no dependence on map
// order when two keys name the same NIC).
func FuzzParseVMConfig(f *testing.F) {
	for _, s := range []string{
		`{"name":"cp-1","smbios1":"uuid=0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b","net0":"virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1","net2":"e1000=BC:24:11:AA:BB:CD,bridge=vmbr1","netdev":"x","cores":4,"sockets":1,"memory":8192,"tags":"k8s","digest":"abc","agent":"1"}`,
		`{"name":"cp-2","cores":"2","sockets":"2","memory":"4096"}`,
		`{"memory":"current=2048"}`, `{"memory":"2048,shares=10"}`, `{"name":1234}`,
		`{"cores":"many"}`, `{"memory":"lots"}`, `{"net99999999999999999999":"virtio"}`,
		`{"net1":"virtio","net01":"e1000"}`, `{"ipconfig0":"ip=192.0.2.10/24,ip6=2001:db8::10/64","ipconfig01":"ip=dhcp"}`, `{"cores":1.5,"sockets":true}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseVMConfig(data)
		if err != nil {
			return
		}
		for i := 0; i < 4; i++ {
			again, err := parseVMConfig(data)
			if err != nil || !reflect.DeepEqual(cfg, again) {
				t.Fatalf("parseVMConfig(%q) = %+v, then %+v, %v", data, cfg, again, err)
			}
		}
		// Each NIC comes from the one key Proxmox would write for it, so
		// the result cannot depend on which of two spellings came first.
		var m map[string]json.RawMessage
		_ = json.Unmarshal(data, &m)
		for idx, v := range cfg.Nets {
			var s flexString
			raw, ok := m["net"+strconv.Itoa(idx)]
			if !ok || json.Unmarshal(raw, &s) != nil || string(s) != v {
				t.Fatalf("parseVMConfig(%q): Nets[%d] = %q, not the value of net%d", data, idx, v, idx)
			}
		}
	})
}

// FuzzFlexInt checks the loose number decoder behind vmid, maxmem, cores,
// template and the firewall enable/ipfilter options: a value it accepts must
// be the number written (truncated), never a wrapped or undefined one, since
// a VM id or memory size that silently changes is worse than an error.
func FuzzFlexInt(f *testing.F) {
	for _, s := range []string{
		`4096`, `"4096"`, `" 4096 "`, `1`, `"1"`, `true`, `"false"`, `null`, `""`, `-1`,
		`1.5`, `"2.0"`, `1e3`, `"abc"`, `9223372036854775807`, `"0x10"`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var n flexInt
		if err := n.UnmarshalJSON(b); err != nil {
			return
		}
		s := strings.TrimSpace(string(b))
		if strings.HasPrefix(s, `"`) {
			if err := json.Unmarshal([]byte(s), &s); err != nil {
				t.Fatalf("flexInt accepted %q, not a JSON string", b)
			}
			s = strings.TrimSpace(s)
		}
		switch s {
		case "", "null", "false":
			if n != 0 {
				t.Fatalf("flexInt(%q) = %d", b, n)
			}
			return
		case "true":
			if n != 1 {
				t.Fatalf("flexInt(%q) = %d", b, n)
			}
			return
		}
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			if int64(n) != i {
				t.Fatalf("flexInt(%q) = %d, want %d", b, n, i)
			}
			return
		}
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("flexInt accepted %q, not a number", b)
		}
		if math.IsNaN(x) || math.IsInf(x, 0) || x >= math.MaxInt64 || x < math.MinInt64 {
			t.Fatalf("flexInt accepted %q (%v), outside int64: got %d", b, x, n)
		}
		if int64(n) != int64(math.Trunc(x)) {
			t.Fatalf("flexInt(%q) = %d, want %v truncated", b, n, x)
		}
	})
}

// FuzzParseIPConfig: a cloud-init ipconfigN value either fails with an error
// naming the field or gives addresses that read back the same from the
// canonical form of their key (ip for IPv4, ip6 for IPv6).
func FuzzParseIPConfig(f *testing.F) {
	for _, s := range []string{
		"ip=192.0.2.10/24,gw=192.0.2.1", "ip=dhcp", "ip6=auto", "ip6=dhcp",
		"ip=192.0.2.10/24,gw=192.0.2.1,ip6=2001:db8::10/64,gw6=2001:db8::1",
		"ip6=2001:db8::10/64", "", "ip", "ip=192.0.2.10", "ip=2001:db8::1/64", "ip6=192.0.2.1/24",
		"IP=192.0.2.10/24", " ip=192.0.2.10/24 , ", "ip=192.0.2.300/24", "ip6=::ffff:192.0.2.1/96",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := ParseIPConfig(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "ipconfig") {
				t.Fatalf("ParseIPConfig(%q) error %q does not name the field", s, err)
			}
			return
		}
		for _, a := range addrs {
			key := "ip6="
			if a.Is4() {
				key = "ip="
			}
			again, err := ParseIPConfig(key + netip.PrefixFrom(a, a.BitLen()).String())
			if err != nil || len(again) != 1 || again[0] != a {
				t.Fatalf("ParseIPConfig(%q) gave %v, which reads back as %v, %v", s, a, again, err)
			}
		}
	})
}
