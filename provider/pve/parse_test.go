package pve

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseSMBIOS1(t *testing.T) {
	tests := []struct {
		raw, uuid, sku string
	}{
		{"uuid=0F3F5A2C-1B2D-4E5F-8A9B-0C1D2E3F4A5B", "0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b", ""},
		// "c3-small" base64-encoded, flagged by base64=1.
		{"uuid=0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b,sku=YzMtc21hbGw=,base64=1", "0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b", "c3-small"},
		{"base64=1,sku=YzMtc21hbGw=,uuid=0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b", "0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b", "c3-small"},
		// Without base64=1 the value is literal, even if it looks like base64.
		{"uuid=0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b,sku=YzMtc21hbGw=", "0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b", "YzMtc21hbGw="},
		{"uuid=0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b,sku=c3-small", "0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b", "c3-small"},
		{"uuid=0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b,sku=not*base64,base64=1", "0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b", "not*base64"},
		{"", "", ""},
		{"serial=abc", "", ""},
	}
	for _, tt := range tests {
		uuid, sku := ParseSMBIOS1(tt.raw)
		if uuid != tt.uuid || sku != tt.sku {
			t.Errorf("ParseSMBIOS1(%q) = %q, %q; want %q, %q", tt.raw, uuid, sku, tt.uuid, tt.sku)
		}
	}
}

func TestParseNet(t *testing.T) {
	tests := []struct {
		raw     string
		want    NetConfig
		wantErr string
	}{
		{raw: "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1", want: NetConfig{Model: "virtio", MAC: "bc:24:11:aa:bb:cc", Bridge: "vmbr0", Firewall: true}},
		{raw: "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=0,tag=30", want: NetConfig{Model: "virtio", MAC: "bc:24:11:aa:bb:cc", Bridge: "vmbr0", Tag: 30}},
		{raw: "e1000=bc:24:11:00:00:01,bridge=vmbr1", want: NetConfig{Model: "e1000", MAC: "bc:24:11:00:00:01", Bridge: "vmbr1"}},
		{raw: "model=vmxnet3,macaddr=BC:24:11:00:00:02,bridge=vmbr0,firewall=1,mtu=1500", want: NetConfig{Model: "vmxnet3", MAC: "bc:24:11:00:00:02", Bridge: "vmbr0", Firewall: true}},
		{raw: "bridge=vmbr0,virtio=BC:24:11:AA:BB:CC", want: NetConfig{Model: "virtio", MAC: "bc:24:11:aa:bb:cc", Bridge: "vmbr0"}},
		{raw: "virtio,bridge=vmbr0", want: NetConfig{Model: "virtio", Bridge: "vmbr0"}},
		{raw: "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,newoption=x", want: NetConfig{Model: "virtio", MAC: "bc:24:11:aa:bb:cc", Bridge: "vmbr0"}},
		{raw: "", wantErr: "empty"},
		{raw: "bridge=vmbr0", wantErr: "no model"},
		{raw: "model=virtio,macaddr=zz:zz", wantErr: "not a MAC"},
		{raw: "virtio=BC:24:11:AA:BB:CC,tag=5000", wantErr: "VLAN"},
		{raw: "virtio=BC:24:11:AA:BB:CC,firewall", wantErr: "key=value"},
	}
	for _, tt := range tests {
		got, err := ParseNet(tt.raw)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseNet(%q) = %+v, %v; want error containing %q", tt.raw, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseNet(%q) = %+v, %v; want %+v", tt.raw, got, err, tt.want)
		}
	}
}

func TestParseClusterVMsTolerant(t *testing.T) {
	data := `[
	 {"id":"qemu/100","type":"qemu","vmid":100,"node":"pve1","name":"cp-1","status":"running","template":0,"maxcpu":4,"maxmem":8589934592,"tags":"k8s;talos"},
	 {"id":"qemu/101","type":"qemu","vmid":"101","node":"pve2","name":"tmpl","status":"stopped","template":"1","maxcpu":"2","maxmem":"2147483648"},
	 {"id":"lxc/200","type":"lxc","node":"pve1","name":200,"status":"unknown","template":false},
	 {"id":"storage/pve1/local","type":"storage","node":"pve1"}
	]`
	got, err := parseClusterVMs([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []VMResource{
		{VMID: 100, Node: "pve1", Name: "cp-1", Type: "qemu", Status: "running", MaxCPU: 4, MaxMem: 8589934592, Tags: "k8s;talos"},
		{VMID: 101, Node: "pve2", Name: "tmpl", Type: "qemu", Status: "stopped", Template: true, MaxCPU: 2, MaxMem: 2147483648},
		{VMID: 200, Node: "pve1", Name: "200", Type: "lxc", Status: "unknown"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseClusterVMs =\n%+v\nwant\n%+v", got, want)
	}
	if _, err := parseClusterVMs([]byte(`[{"type":"qemu","vmid":"abc"}]`)); err == nil {
		t.Fatal("want error for a non-numeric vmid")
	}
}

func TestParseVMConfig(t *testing.T) {
	tests := []struct {
		name string
		data string
		want VMConfig
	}{
		{
			name: "numbers",
			data: `{"name":"cp-1","smbios1":"uuid=0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b","net0":"virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1","net2":"e1000=BC:24:11:AA:BB:CD,bridge=vmbr1","netdev":"x","cores":4,"sockets":1,"memory":8192,"tags":"k8s","digest":"abc","agent":"1"}`,
			want: VMConfig{Name: "cp-1", SMBIOS1: "uuid=0f3f5a2c-1b2d-4e5f-8a9b-0c1d2e3f4a5b", Nets: map[int]string{0: "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1", 2: "e1000=BC:24:11:AA:BB:CD,bridge=vmbr1"}, Cores: 4, Sockets: 1, Memory: 8192, Tags: "k8s", Digest: "abc"},
		},
		{
			name: "strings",
			data: `{"name":"cp-2","cores":"2","sockets":"2","memory":"4096"}`,
			want: VMConfig{Name: "cp-2", Nets: map[int]string{}, Cores: 2, Sockets: 2, Memory: 4096},
		},
		{
			name: "memory property string",
			data: `{"memory":"current=2048"}`,
			want: VMConfig{Nets: map[int]string{}, Memory: 2048},
		},
		{
			name: "numeric name",
			data: `{"name":1234}`,
			want: VMConfig{Name: "1234", Nets: map[int]string{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVMConfig([]byte(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", *got, tt.want)
			}
		})
	}
	if _, err := parseVMConfig([]byte(`{"cores":"many"}`)); err == nil || !strings.Contains(err.Error(), "cores") {
		t.Fatalf("want an error naming cores, got %v", err)
	}
	if _, err := parseVMConfig([]byte(`{"memory":"lots"}`)); err == nil || !strings.Contains(err.Error(), "memory") {
		t.Fatalf("want an error naming memory, got %v", err)
	}
}

func TestParseAgentInterfaces(t *testing.T) {
	data := `{"result":[
	 {"name":"lo","hardware-address":"00:00:00:00:00:00","ip-addresses":[{"ip-address":"127.0.0.1","ip-address-type":"ipv4","prefix":8}]},
	 {"name":"eth0","hardware-address":"BC:24:11:AA:BB:CC","ip-addresses":[
	   {"ip-address":"192.0.2.10","ip-address-type":"ipv4","prefix":24},
	   {"ip-address":"fe80::be24:11ff:feaa:bbcc%eth0","ip-address-type":"ipv6","prefix":"64"},
	   {"ip-address":"2001:db8::10","ip-address-type":"ipv6","prefix":64},
	   {"ip-address":"garbage","ip-address-type":"ipv4","prefix":24},
	   {"ip-address":"192.0.2.11","ip-address-type":"ipv4","prefix":40}]},
	 {"name":"eth1","hardware-address":"bc:24:11:aa:bb:cd"}
	]}`
	got, err := parseAgentInterfaces([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []AgentInterface{
		{Name: "lo", MAC: "00:00:00:00:00:00", Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
		{Name: "eth0", MAC: "bc:24:11:aa:bb:cc", Prefixes: []netip.Prefix{
			netip.MustParsePrefix("192.0.2.10/24"), netip.MustParsePrefix("fe80::be24:11ff:feaa:bbcc/64"), netip.MustParsePrefix("2001:db8::10/64")}},
		{Name: "eth1", MAC: "bc:24:11:aa:bb:cd"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestParseFirewallAndIPSets(t *testing.T) {
	fo, err := parseFirewallOptions([]byte(`{"enable":1,"ipfilter":"1","macfilter":0,"digest":"d1"}`))
	if err != nil || *fo != (FirewallOptions{Enable: true, IPFilter: true, Digest: "d1"}) {
		t.Fatalf("parseFirewallOptions = %+v, %v", fo, err)
	}
	fo, err = parseFirewallOptions([]byte(`{"digest":"d2"}`))
	if err != nil || *fo != (FirewallOptions{Digest: "d2"}) {
		t.Fatalf("parseFirewallOptions(defaults) = %+v, %v", fo, err)
	}
	sets, err := parseIPSets([]byte(`[{"name":"ipfilter-net0","digest":"x"},{"name":"pvelb-vips","comment":"pvelb","digest":"x"}]`))
	if err != nil || !reflect.DeepEqual(sets, []IPSet{{Name: "ipfilter-net0", Digest: "x"}, {Name: "pvelb-vips", Comment: "pvelb", Digest: "x"}}) {
		t.Fatalf("parseIPSets = %+v, %v", sets, err)
	}
	entries, err := parseIPSetEntries([]byte(`[{"cidr":"192.0.2.0/24","nomatch":1,"digest":"y"},{"cidr":"192.0.2.5","comment":"pvelb: default/web","digest":"y"}]`))
	want := []IPSetEntry{{CIDR: "192.0.2.0/24", NoMatch: true, Digest: "y"}, {CIDR: "192.0.2.5", Comment: "pvelb: default/web", Digest: "y"}}
	if err != nil || !reflect.DeepEqual(entries, want) {
		t.Fatalf("parseIPSetEntries = %+v, %v", entries, err)
	}
	entries, err = parseIPSetEntries([]byte(`null`))
	if err != nil || len(entries) != 0 {
		t.Fatalf("parseIPSetEntries(null) = %+v, %v", entries, err)
	}
	if _, err := parseIPSetEntries([]byte(`{"not":"a list"}`)); err == nil {
		t.Fatal("want error for an object where a list belongs")
	}
}

func TestParseIPConfig(t *testing.T) {
	tests := []struct {
		raw     string
		want    []string
		wantErr bool
	}{
		{"ip=192.0.2.10/24,gw=192.0.2.1", []string{"192.0.2.10"}, false},
		{"ip=192.0.2.10/24,gw=192.0.2.1,ip6=2001:db8::10/64,gw6=2001:db8::1", []string{"192.0.2.10", "2001:db8::10"}, false},
		{"ip=dhcp,ip6=auto", nil, false},
		{"ip6=dhcp", nil, false},
		{"", nil, false},
		{"ip=192.0.2.10", nil, true},          // Proxmox requires CIDR notation
		{"ip=2001:db8::1/64", nil, true},      // wrong family for ip
		{"ip6=192.0.2.10/24", nil, true},      // wrong family for ip6
		{"ip=192.0.2.10/24,junk", nil, true},  // not key=value
		{"gw=192.0.2.1,newkey=x", nil, false}, // keys pvelb does not read
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := ParseIPConfig(tt.raw)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseIPConfig(%q) error = %v, want error %v", tt.raw, err, tt.wantErr)
			}
			var gs []string
			for _, a := range got {
				gs = append(gs, a.String())
			}
			if !slices.Equal(gs, tt.want) {
				t.Fatalf("ParseIPConfig(%q) = %v, want %v", tt.raw, gs, tt.want)
			}
		})
	}
}
