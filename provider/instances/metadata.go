package instances

import (
	"encoding/base64"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/pvelb/pvelb/provider/pve"
)

// SMBIOS1 is the part of a VM's smbios1 option pvelb reads.
type SMBIOS1 struct {
	UUID string
	SKU  string
}

// ParseSMBIOS1 reads Proxmox's smbios1 property string
// ("uuid=...,sku=...,base64=1"). When base64=1 is present Proxmox stores the
// free-text fields base64-encoded; they are decoded here. A field that does
// not decode is dropped rather than passed on as garbage.
func ParseSMBIOS1(s string) SMBIOS1 {
	var out SMBIOS1
	b64 := false
	fields := map[string]string{}
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		fields[k] = v
		if k == "base64" && (v == "1" || v == "true") {
			b64 = true
		}
	}
	out.UUID = strings.ToLower(strings.TrimSpace(fields["uuid"]))
	if sku, ok := fields["sku"]; ok {
		if b64 {
			dec, err := base64.StdEncoding.DecodeString(sku)
			if err != nil {
				sku = ""
			} else {
				sku = string(dec)
			}
		}
		out.SKU = strings.TrimSpace(sku)
	}
	return out
}

// labelValueRE is Kubernetes' label value syntax (without the empty value).
var labelValueRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

// IsLabelValue reports whether s can be a non-empty Kubernetes label value.
func IsLabelValue(s string) bool {
	return len(s) <= 63 && labelValueRE.MatchString(s)
}

// proxmoxDefaultMemoryMiB is what Proxmox gives a VM whose config has no
// memory line.
const proxmoxDefaultMemoryMiB = 512

// InstanceType names a VM's size for node.kubernetes.io/instance-type: the
// smbios1 sku when the user set a label-safe one, otherwise
// "<vCPUs>VCPU-<GiB>GB" from the config, e.g. "4VCPU-8GB" or, for 1536 MiB,
// "2VCPU-1.5GB" (at most two decimals; '.' is label-safe).
func InstanceType(cfg *pve.VMConfig, res pve.VMResource) string {
	if cfg != nil {
		if sku := ParseSMBIOS1(cfg.SMBIOS1).SKU; sku != "" && IsLabelValue(sku) {
			return sku
		}
	}
	cpus, memMiB := 0, 0
	if cfg != nil {
		cores, sockets := cfg.Cores, cfg.Sockets
		if cores <= 0 {
			cores = 1
		}
		if sockets <= 0 {
			sockets = 1
		}
		cpus = cores * sockets
		memMiB = cfg.Memory
	}
	if cpus == 0 {
		cpus = max(res.MaxCPU, 1)
	}
	if memMiB <= 0 {
		memMiB = int(res.MaxMem / (1 << 20))
	}
	if memMiB <= 0 {
		memMiB = proxmoxDefaultMemoryMiB
	}
	gib := math.Round(float64(memMiB)/1024*100) / 100
	if gib == 0 {
		gib = 0.01
	}
	return strconv.Itoa(cpus) + "VCPU-" + strconv.FormatFloat(gib, 'f', -1, 64) + "GB"
}
