package instances

import (
	"errors"
	"testing"
)

func TestParseProviderID(t *testing.T) {
	tests := []struct {
		id      string
		region  string
		vmid    int
		foreign bool
		uuid    string // want ErrUUIDProviderID and this from ProviderIDUUID
		wantErr bool
	}{
		{id: "proxmox://6F1C2B9E-6D0A-4A44-9A55-3C1F0E2D7B10", uuid: "6f1c2b9e-6d0a-4a44-9a55-3c1f0e2d7b10", wantErr: true},
		{id: "proxmox://6f1c2b9e-6d0a-4a44-9a55-3c1f0e2d7b10", uuid: "6f1c2b9e-6d0a-4a44-9a55-3c1f0e2d7b10", wantErr: true},
		{id: "proxmox://6f1c2b9e-6d0a-4a44-9a55-3c1f0e2d7b1", wantErr: true}, // one digit short: malformed
		{id: "proxmox://6f1c2b9e6d0a4a449a553c1f0e2d7b10", wantErr: true},    // no dashes
		{id: "proxmox://pve-east/100", region: "pve-east", vmid: 100},
		{id: "proxmox://r/999999999", region: "r", vmid: 999999999},
		{id: "aws:///us-east-1a/i-123", foreign: true, wantErr: true},
		{id: "Proxmox://pve/100", foreign: true, wantErr: true},
		{id: "", foreign: true, wantErr: true},
		{id: "proxmox://pve-east", wantErr: true},
		{id: "proxmox:///100", wantErr: true},
		{id: "proxmox://pve-east/", wantErr: true},
		{id: "proxmox://pve-east/abc", wantErr: true},
		{id: "proxmox://pve-east/0100", wantErr: true},
		{id: "proxmox://pve-east/+100", wantErr: true},
		{id: "proxmox://pve-east/99", wantErr: true},
		{id: "proxmox://pve-east/1000000000", wantErr: true},
		{id: "proxmox://pve-east/100/extra", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			region, vmid, err := ParseProviderID(tt.id)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseProviderID(%q) err = %v, wantErr %v", tt.id, err, tt.wantErr)
			}
			if got := errors.Is(err, ErrForeignProviderID); got != tt.foreign {
				t.Errorf("foreign = %v, want %v (err %v)", got, tt.foreign, err)
			}
			if got := errors.Is(err, ErrUUIDProviderID); got != (tt.uuid != "") {
				t.Errorf("uuid form = %v, want %v (err %v)", got, tt.uuid != "", err)
			}
			if got, ok := ProviderIDUUID(tt.id); got != tt.uuid || ok != (tt.uuid != "") {
				t.Errorf("ProviderIDUUID = %q, %v; want %q", got, ok, tt.uuid)
			}
			if err == nil && (region != tt.region || vmid != tt.vmid) {
				t.Errorf("= (%q, %d), want (%q, %d)", region, vmid, tt.region, tt.vmid)
			}
		})
	}
}

func TestFormatProviderIDRoundTrip(t *testing.T) {
	for _, c := range []struct {
		region string
		vmid   int
		want   string
	}{{"pve-east", 100, "proxmox://pve-east/100"}, {"lab", 123456, "proxmox://lab/123456"}} {
		got := FormatProviderID(c.region, c.vmid)
		if got != c.want {
			t.Errorf("FormatProviderID(%q, %d) = %q, want %q", c.region, c.vmid, got, c.want)
		}
		r, v, err := ParseProviderID(got)
		if err != nil || r != c.region || v != c.vmid {
			t.Errorf("round trip of %q = (%q, %d, %v)", got, r, v, err)
		}
	}
}
