package instances

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
)

func TestParseSMBIOS1(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		in   string
		want SMBIOS1
	}{
		{"uuid=6F1B3C2A-0D4E-4F5A-8B9C-1D2E3F4A5B6C", SMBIOS1{UUID: "6f1b3c2a-0d4e-4f5a-8b9c-1d2e3f4a5b6c"}},
		{"uuid=abc,sku=c2.large", SMBIOS1{UUID: "abc", SKU: "c2.large"}},
		{"base64=1,sku=" + b64("m5.xlarge") + ",uuid=abc", SMBIOS1{UUID: "abc", SKU: "m5.xlarge"}},
		{"uuid=abc,sku=" + b64("m5.xlarge") + ",base64=1", SMBIOS1{UUID: "abc", SKU: "m5.xlarge"}},
		{"uuid=abc,sku=***,base64=1", SMBIOS1{UUID: "abc"}},
		{"", SMBIOS1{}},
		{"garbage", SMBIOS1{}},
	}
	for _, tt := range tests {
		if got := ParseSMBIOS1(tt.in); got != tt.want {
			t.Errorf("ParseSMBIOS1(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestInstanceType(t *testing.T) {
	res := pve.VMResource{MaxCPU: 6, MaxMem: 3 << 30}
	tests := []struct {
		name string
		cfg  *pve.VMConfig
		res  pve.VMResource
		want string
	}{
		{"sku wins", &pve.VMConfig{SMBIOS1: "uuid=a,sku=gp.medium", Cores: 4, Memory: 8192}, res, "gp.medium"},
		{"base64 sku", &pve.VMConfig{SMBIOS1: "uuid=a,sku=" + base64.StdEncoding.EncodeToString([]byte("gp_2")) + ",base64=1", Cores: 4}, res, "gp_2"},
		{"unsafe sku falls back", &pve.VMConfig{SMBIOS1: "uuid=a,sku=big box", Cores: 4, Sockets: 1, Memory: 8192}, res, "4VCPU-8GB"},
		{"sku ending in dash falls back", &pve.VMConfig{SMBIOS1: "uuid=a,sku=big-", Cores: 2, Memory: 2048}, res, "2VCPU-2GB"},
		{"too long sku falls back", &pve.VMConfig{SMBIOS1: "uuid=a,sku=" + strings.Repeat("a", 64), Cores: 1, Memory: 1024}, res, "1VCPU-1GB"},
		{"cores times sockets", &pve.VMConfig{Cores: 4, Sockets: 2, Memory: 16384}, res, "8VCPU-16GB"},
		{"fractional GiB", &pve.VMConfig{Cores: 2, Memory: 1536}, res, "2VCPU-1.5GB"},
		{"rounded to two decimals", &pve.VMConfig{Cores: 1, Memory: 1000}, res, "1VCPU-0.98GB"},
		{"defaults cores and sockets to 1", &pve.VMConfig{Memory: 512}, res, "1VCPU-0.5GB"},
		{"memory from resource", &pve.VMConfig{Cores: 2}, res, "2VCPU-3GB"},
		{"no config uses resource", nil, res, "6VCPU-3GB"},
		{"nothing known uses Proxmox defaults", nil, pve.VMResource{}, "1VCPU-0.5GB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := InstanceType(tt.cfg, tt.res)
			if got != tt.want {
				t.Errorf("InstanceType = %q, want %q", got, tt.want)
			}
			if !IsLabelValue(got) {
				t.Errorf("%q is not a label value", got)
			}
		})
	}
}

func TestIsLabelValue(t *testing.T) {
	for s, want := range map[string]bool{
		"pve1": true, "a": true, "a.b_c-d": true, "4VCPU-1.5GB": true,
		"": false, "-a": false, "a-": false, "a b": false, "a/b": false, strings.Repeat("x", 64): false, strings.Repeat("x", 63): true,
	} {
		if got := IsLabelValue(s); got != want {
			t.Errorf("IsLabelValue(%q) = %v, want %v", s, got, want)
		}
	}
}
