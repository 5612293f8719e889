package pve

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Proxmox's Perl backend serialises numbers and booleans loosely: the same
// field comes back as 4096, "4096", 1, "1" or true depending on the endpoint,
// the version and whether the value came from a config file. These types read
// any of those forms.

// flexInt is an integer sent as a JSON number or a numeric string.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*f = 0
		return nil
	}
	s := string(b)
	if b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		s = strings.TrimSpace(s)
		if s == "" {
			*f = 0
			return nil
		}
	}
	switch s {
	case "true":
		*f = 1
		return nil
	case "false":
		*f = 0
		return nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*f = flexInt(n)
		return nil
	}
	x, err := strconv.ParseFloat(s, 64)
	// ParseFloat also takes NaN, Inf and numbers past int64 (which ParseInt
	// refused above); converting those to int64 gives an arbitrary value,
	// so a huge vmid or maxmem would silently become another number.
	if err != nil || math.IsNaN(x) || x < math.MinInt64 || x >= math.MaxInt64 {
		return fmt.Errorf("not a number: %s", b)
	}
	*f = flexInt(x)
	return nil
}

// flexBool is a boolean sent as 0/1, "0"/"1" or true/false.
type flexBool bool

func (f *flexBool) UnmarshalJSON(b []byte) error {
	var n flexInt
	if err := n.UnmarshalJSON(b); err != nil {
		return fmt.Errorf("not a boolean: %s", b)
	}
	*f = n != 0
	return nil
}

// flexString is a string that Proxmox sometimes sends as a bare number
// (a numeric VM name or tag, for example).
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*f = ""
		return nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
		return nil
	}
	*f = flexString(b)
	return nil
}

type resourceRow struct {
	ID       flexString `json:"id"`
	Type     flexString `json:"type"`
	VMID     flexInt    `json:"vmid"`
	Node     flexString `json:"node"`
	Name     flexString `json:"name"`
	Status   flexString `json:"status"`
	Template flexBool   `json:"template"`
	MaxCPU   flexInt    `json:"maxcpu"`
	MaxMem   flexInt    `json:"maxmem"`
	Tags     flexString `json:"tags"`
}

// parseClusterVMs reads /cluster/resources?type=vm, keeping only guests
// (qemu and lxc rows); a server that ignores the type filter may send others.
func parseClusterVMs(data []byte) ([]VMResource, error) {
	var rows []resourceRow
	if err := unmarshalData(data, &rows); err != nil {
		return nil, err
	}
	out := make([]VMResource, 0, len(rows))
	for _, r := range rows {
		if r.Type != "qemu" && r.Type != "lxc" {
			continue
		}
		vmid := int(r.VMID)
		if vmid == 0 {
			// Older servers only carry the id as "qemu/100".
			if _, id, ok := strings.Cut(string(r.ID), "/"); ok {
				n, _ := strconv.Atoi(id)
				vmid = n
			}
		}
		maxMem := uint64(0)
		if r.MaxMem > 0 {
			maxMem = uint64(r.MaxMem)
		}
		out = append(out, VMResource{
			VMID:     vmid,
			Node:     string(r.Node),
			Name:     string(r.Name),
			Type:     string(r.Type),
			Status:   string(r.Status),
			Template: bool(r.Template),
			MaxCPU:   int(r.MaxCPU),
			MaxMem:   maxMem,
			Tags:     string(r.Tags),
		})
	}
	return out, nil
}

// netKeyRE matches the netN keys Proxmox writes, whose index has no leading
// zero: "net01" would otherwise name NIC 1 as well as "net1", and which of
// the two won would depend on map order.
var netKeyRE = regexp.MustCompile(`^net(0|[1-9][0-9]*)$`)

// parseVMConfig reads /nodes/{node}/qemu/{vmid}/config.
func parseVMConfig(data []byte) (*VMConfig, error) {
	var m map[string]json.RawMessage
	if err := unmarshalData(data, &m); err != nil {
		return nil, err
	}
	cfg := &VMConfig{Nets: map[int]string{}}
	str := func(key string) (string, error) {
		raw, ok := m[key]
		if !ok {
			return "", nil
		}
		var s flexString
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("config %s: %v", key, err)
		}
		return string(s), nil
	}
	integer := func(key string) (int, error) {
		raw, ok := m[key]
		if !ok {
			return 0, nil
		}
		var n flexInt
		if err := json.Unmarshal(raw, &n); err != nil {
			return 0, fmt.Errorf("config %s: %v", key, err)
		}
		return int(n), nil
	}
	var err error
	if cfg.Name, err = str("name"); err != nil {
		return nil, err
	}
	if cfg.SMBIOS1, err = str("smbios1"); err != nil {
		return nil, err
	}
	if cfg.Tags, err = str("tags"); err != nil {
		return nil, err
	}
	if cfg.Digest, err = str("digest"); err != nil {
		return nil, err
	}
	if cfg.Cores, err = integer("cores"); err != nil {
		return nil, err
	}
	if cfg.Sockets, err = integer("sockets"); err != nil {
		return nil, err
	}
	// Since PVE 8.1 memory is a property string "[current=]<MiB>[,...]".
	memory, err := str("memory")
	if err != nil {
		return nil, err
	}
	if memory != "" {
		if cfg.Memory, err = parseMemory(memory); err != nil {
			return nil, err
		}
	}
	if cfg.Nets, err = indexedKeys(m, netKeyRE); err != nil {
		return nil, err
	}
	if cfg.IPConfigs, err = indexedKeys(m, ipconfigKeyRE); err != nil {
		return nil, err
	}
	if len(cfg.IPConfigs) == 0 {
		cfg.IPConfigs = nil
	}
	return cfg, nil
}

// indexedKeys collects the string values of the config keys re matches
// ("net3", "ipconfig0") by the index re captures.
func indexedKeys(m map[string]json.RawMessage, re *regexp.Regexp) (map[int]string, error) {
	out := map[int]string{}
	for key, raw := range m {
		sm := re.FindStringSubmatch(key)
		if sm == nil {
			continue
		}
		idx, err := strconv.Atoi(sm[1])
		if err != nil {
			continue
		}
		var s flexString
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("config %s: %v", key, err)
		}
		out[idx] = string(s)
	}
	return out, nil
}

// ipconfigKeyRE matches the cloud-init ipconfigN keys of a VM config.
var ipconfigKeyRE = regexp.MustCompile(`^ipconfig(0|[1-9][0-9]*)$`)

// ParseIPConfig returns the static addresses of a cloud-init ipconfigN value
// such as "ip=192.0.2.10/24,gw=192.0.2.1,ip6=2001:db8::10/64". "dhcp" and
// "auto" name no address. Proxmox's nftables firewall admits these addresses
// on netN when the VM has no ipfilter-netN set, so a set pvelb creates must
// admit them too.
func ParseIPConfig(raw string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(raw, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("ipconfig %q: %q is not key=value", raw, part)
		}
		switch strings.ToLower(k) {
		case "ip", "ip6":
			if v == "dhcp" || v == "auto" {
				continue
			}
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return nil, fmt.Errorf("ipconfig %q: %s %q is not address/length, dhcp or auto", raw, k, v)
			}
			if (k == "ip") != p.Addr().Is4() {
				return nil, fmt.Errorf("ipconfig %q: %s %q is of the wrong family", raw, k, v)
			}
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

func parseMemory(s string) (int, error) {
	for _, part := range strings.Split(s, ",") {
		k, v, hasKey := strings.Cut(part, "=")
		if !hasKey {
			v, k = k, "current"
		}
		if k != "current" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return 0, fmt.Errorf("config memory %q: not a number of MiB", s)
		}
		return n, nil
	}
	return 0, nil
}

type statusBody struct {
	Status    flexString `json:"status"`
	QMPStatus flexString `json:"qmpstatus"`
	Name      flexString `json:"name"`
	Uptime    flexInt    `json:"uptime"`
}

func parseVMStatus(data []byte) (*VMStatus, error) {
	var b statusBody
	if err := unmarshalData(data, &b); err != nil {
		return nil, err
	}
	return &VMStatus{Status: string(b.Status), QMPStatus: string(b.QMPStatus), Name: string(b.Name), Uptime: int64(b.Uptime)}, nil
}

type agentBody struct {
	Result []struct {
		Name        string `json:"name"`
		HWAddr      string `json:"hardware-address"`
		IPAddresses []struct {
			Address string  `json:"ip-address"`
			Type    string  `json:"ip-address-type"`
			Prefix  flexInt `json:"prefix"`
		} `json:"ip-addresses"`
	} `json:"result"`
}

// parseAgentInterfaces reads the guest agent's network-get-interfaces answer.
// Addresses the guest reports in a form we cannot parse are skipped rather
// than failing the whole call: the guest is not trusted to be tidy.
func parseAgentInterfaces(data []byte) ([]AgentInterface, error) {
	var b agentBody
	if err := unmarshalData(data, &b); err != nil {
		return nil, err
	}
	out := make([]AgentInterface, 0, len(b.Result))
	for _, r := range b.Result {
		ifc := AgentInterface{Name: r.Name, MAC: strings.ToLower(r.HWAddr)}
		for _, a := range r.IPAddresses {
			addr, err := netip.ParseAddr(a.Address)
			if err != nil {
				continue
			}
			bits := int(a.Prefix)
			if bits < 0 || bits > addr.BitLen() {
				continue
			}
			ifc.Prefixes = append(ifc.Prefixes, netip.PrefixFrom(addr.WithZone(""), bits))
		}
		out = append(out, ifc)
	}
	return out, nil
}

type firewallOptionsBody struct {
	Enable    flexBool   `json:"enable"`
	IPFilter  flexBool   `json:"ipfilter"`
	PolicyIn  flexString `json:"policy_in"`
	PolicyOut flexString `json:"policy_out"`
	Digest    flexString `json:"digest"`
}

func parseFirewallOptions(data []byte) (*FirewallOptions, error) {
	var b firewallOptionsBody
	if err := unmarshalData(data, &b); err != nil {
		return nil, err
	}
	return &FirewallOptions{Enable: bool(b.Enable), IPFilter: bool(b.IPFilter), PolicyIn: string(b.PolicyIn), PolicyOut: string(b.PolicyOut), Digest: string(b.Digest)}, nil
}

type ipsetRow struct {
	Name    flexString `json:"name"`
	Comment flexString `json:"comment"`
	Digest  flexString `json:"digest"`
}

func parseIPSets(data []byte) ([]IPSet, error) {
	var rows []ipsetRow
	if err := unmarshalData(data, &rows); err != nil {
		return nil, err
	}
	out := make([]IPSet, 0, len(rows))
	for _, r := range rows {
		out = append(out, IPSet{Name: string(r.Name), Comment: string(r.Comment), Digest: string(r.Digest)})
	}
	return out, nil
}

type ipsetEntryRow struct {
	CIDR    flexString `json:"cidr"`
	Comment flexString `json:"comment"`
	NoMatch flexBool   `json:"nomatch"`
	Digest  flexString `json:"digest"`
}

func parseIPSetEntries(data []byte) ([]IPSetEntry, error) {
	var rows []ipsetEntryRow
	if err := unmarshalData(data, &rows); err != nil {
		return nil, err
	}
	out := make([]IPSetEntry, 0, len(rows))
	for _, r := range rows {
		out = append(out, IPSetEntry{CIDR: string(r.CIDR), Comment: string(r.Comment), NoMatch: bool(r.NoMatch), Digest: string(r.Digest)})
	}
	return out, nil
}

// unmarshalData decodes the payload of {"data": ...}; a null or absent payload
// leaves v at its zero value.
func unmarshalData(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || string(data) == "null" {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode response: %v", err)
	}
	return nil
}

// ParseSMBIOS1 reads a VM's smbios1 config value
// ("uuid=<uuid>[,sku=<value>][,base64=1]...") and returns the uuid and sku.
// Proxmox stores the free-text fields (sku, serial, ...) base64-encoded when,
// and only when, the value carries base64=1; the uuid is never encoded. A sku
// that claims to be base64 but does not decode is returned as written.
func ParseSMBIOS1(raw string) (uuid, sku string) {
	encoded := false
	for _, part := range strings.Split(raw, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case "uuid":
			uuid = strings.ToLower(strings.TrimSpace(v))
		case "sku":
			sku = v
		case "base64":
			encoded = v == "1" || strings.EqualFold(v, "true") || strings.EqualFold(v, "yes") || strings.EqualFold(v, "on")
		}
	}
	if encoded && sku != "" {
		if b, err := base64.StdEncoding.DecodeString(sku); err == nil {
			sku = string(b)
		}
	}
	return uuid, sku
}

// NetConfig is a parsed QEMU netN config value.
type NetConfig struct {
	Model    string // virtio, e1000, vmxnet3, ...
	MAC      string // lowercase, colon-separated
	Bridge   string
	Firewall bool
	Tag      int // VLAN tag, 0 when untagged
}

// netOptionKeys are the netN keys that are not a "<model>=<mac>" pair.
var netOptionKeys = map[string]bool{
	"model": true, "macaddr": true, "bridge": true, "firewall": true, "link_down": true,
	"mtu": true, "queues": true, "rate": true, "tag": true, "trunks": true,
}

// ParseNet parses a QEMU netN value such as
// "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,tag=5" (also the long form
// "model=virtio,macaddr=...").
func ParseNet(raw string) (NetConfig, error) {
	var nc NetConfig
	if strings.TrimSpace(raw) == "" {
		return nc, fmt.Errorf("net: empty value")
	}
	for i, part := range strings.Split(raw, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, hasValue := strings.Cut(part, "=")
		k = strings.ToLower(k)
		switch {
		case !hasValue && i == 0:
			nc.Model = k // "[model=]<model>" without a MAC
		case !hasValue:
			return nc, fmt.Errorf("net %q: %q is not key=value", raw, part)
		case k == "model":
			nc.Model = v
		case k == "macaddr":
			nc.MAC = v
		case k == "bridge":
			nc.Bridge = v
		case k == "firewall":
			nc.Firewall = v == "1" || strings.EqualFold(v, "true") || strings.EqualFold(v, "on") || strings.EqualFold(v, "yes")
		case k == "tag":
			t, err := strconv.Atoi(v)
			if err != nil || t < 1 || t > 4094 {
				return nc, fmt.Errorf("net %q: tag %q is not a VLAN id (1-4094)", raw, v)
			}
			nc.Tag = t
		case netOptionKeys[k]:
		default:
			// "<model>=<mac>"; any other unknown key is a newer option we do not use.
			if _, err := net.ParseMAC(v); err == nil && nc.Model == "" {
				nc.Model, nc.MAC = k, v
			}
		}
	}
	if nc.Model == "" {
		return nc, fmt.Errorf("net %q: no model", raw)
	}
	if nc.MAC != "" {
		hw, err := net.ParseMAC(nc.MAC)
		if err != nil || len(hw) != 6 {
			return nc, fmt.Errorf("net %q: mac %q is not a MAC address", raw, nc.MAC)
		}
		nc.MAC = hw.String()
	}
	return nc, nil
}
