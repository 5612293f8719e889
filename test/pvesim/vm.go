package pvesim

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// AddVM adds a VM (its node becomes a known, online host unless marked
// offline). Adding an existing VMID fails, as on a real cluster.
func (s *Server) AddVM(vm VM) error {
	if vm.VMID < 100 || vm.VMID > 999999999 {
		return fmt.Errorf("vmid %d: must be 100..999999999", vm.VMID)
	}
	if vm.Node == "" {
		return fmt.Errorf("vm %d: node must be set", vm.VMID)
	}
	switch vm.Status {
	case "":
		vm.Status = "running"
	case "running", "stopped", "paused":
	default:
		return fmt.Errorf("vm %d: status %q is not running, stopped or paused", vm.VMID, vm.Status)
	}
	if vm.Cores == 0 {
		vm.Cores = 1
	}
	if vm.Sockets == 0 {
		vm.Sockets = 1
	}
	if vm.MemoryMiB == 0 {
		vm.MemoryMiB = 2048
	}
	if vm.Name == "" {
		vm.Name = "vm" + strconv.Itoa(vm.VMID)
	}
	nets := make(map[int]string, len(vm.Nets))
	for k, v := range vm.Nets {
		nets[k] = v
	}
	vm.Nets = nets
	if vm.Agent != nil { // nil means no agent; an empty list an agent with nothing to report
		vm.Agent = append(make([]AgentIface, 0, len(vm.Agent)), vm.Agent...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.vms[vm.VMID]; ok {
		return fmt.Errorf("vm %d: already exists on node %s", vm.VMID, old.Node)
	}
	s.vms[vm.VMID] = &vm
	s.hosts[vm.Node] = true
	return nil
}

// DeleteVM removes a VM and its firewall config (qm destroy removes the .fw).
func (s *Server) DeleteVM(vmid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vms, vmid)
	delete(s.firewalls, vmid)
}

// SetVMStatus sets "running", "stopped" or "paused"; unknown VMs are ignored.
func (s *Server) SetVMStatus(vmid int, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if vm := s.vms[vmid]; vm != nil {
		vm.Status = status
	}
}

// MoveVM migrates a VM to another host.
func (s *Server) MoveVM(vmid int, node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if vm := s.vms[vmid]; vm != nil {
		vm.Node = node
		s.hosts[node] = true
	}
}

// SetHostOnline marks a Proxmox host reachable or not. VMs on an offline
// host show status "unknown" in /cluster/resources, and calls proxied to it
// fail with 595.
func (s *Server) SetHostOnline(node string, online bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts[node] = true
	s.offline[node] = !online
}

// proxyCheck stands for pveproxy forwarding a call to the node it names.
func (s *Server) proxyCheck(node string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.knownHostLocked(node) {
		return fail(http.StatusInternalServerError, "hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", node, node)
	}
	if s.offline[node] {
		return fail(595, "Errors during connection establishment, proxy handshake: No route to host")
	}
	return nil
}

func (s *Server) knownHostLocked(node string) bool {
	if s.hosts[node] {
		return true
	}
	for _, vm := range s.vms {
		if vm.Node == node {
			return true
		}
	}
	return false
}

func (s *Server) vmOnNode(r *request) (VM, error) {
	vmid, _ := strconv.Atoi(r.params["vmid"])
	node := r.params["node"]
	s.mu.Lock()
	defer s.mu.Unlock()
	vm := s.vms[vmid]
	if vm == nil || vm.Node != node {
		return VM{}, fail(http.StatusInternalServerError, "Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", node, vmid)
	}
	return *vm, nil
}

func (s *Server) clusterResources(r *request) (any, error) {
	typ := r.params["type"]
	s.mu.Lock()
	defer s.mu.Unlock()
	rows := []map[string]any{}
	if typ == "" || typ == "node" {
		for _, node := range s.hostNamesLocked() {
			if !r.token.hasPriv("/nodes/"+node, "Sys.Audit") {
				continue
			}
			status := "online"
			if s.offline[node] {
				status = "offline"
			}
			rows = append(rows, map[string]any{"id": "node/" + node, "type": "node", "node": node, "status": status,
				"level": "", "maxcpu": 16, "maxmem": int64(64) << 30, "cgroup-mode": 2})
		}
	}
	if typ == "" || typ == "vm" {
		for _, vm := range s.sortedVMsLocked() {
			if !r.token.hasPriv(fmt.Sprintf("/vms/%d", vm.VMID), "VM.Audit") {
				continue
			}
			row := map[string]any{
				"id": fmt.Sprintf("qemu/%d", vm.VMID), "type": "qemu", "vmid": vm.VMID, "node": vm.Node,
				"name": vm.Name, "template": b2i(vm.Template), "maxcpu": vm.Cores * vm.Sockets,
				"maxmem": int64(vm.MemoryMiB) << 20, "maxdisk": int64(32) << 30,
			}
			if vm.Tags != "" {
				row["tags"] = vm.Tags
			}
			if s.offline[vm.Node] {
				row["status"] = "unknown"
			} else {
				row["status"] = statusOf(vm)
				row["uptime"], row["cpu"], row["mem"] = uptimeOf(vm), 0.01, int64(vm.MemoryMiB)<<19
				row["disk"], row["netin"], row["netout"], row["diskread"], row["diskwrite"] = 0, 0, 0, 0, 0
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

func (s *Server) listNodes(r *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rows := []map[string]any{}
	for _, node := range s.hostNamesLocked() {
		row := map[string]any{"node": node, "id": "node/" + node, "type": "node", "status": "online", "level": ""}
		if s.offline[node] {
			row["status"] = "offline"
		} else {
			row["maxcpu"], row["maxmem"], row["uptime"], row["cpu"], row["mem"] = 16, int64(64)<<30, 86400, 0.05, int64(8)<<30
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func (s *Server) listNodeVMs(r *request) (any, error) {
	node := r.params["node"]
	s.mu.Lock()
	defer s.mu.Unlock()
	rows := []map[string]any{}
	for _, vm := range s.sortedVMsLocked() {
		if vm.Node != node || !r.token.hasPriv(fmt.Sprintf("/vms/%d", vm.VMID), "VM.Audit") {
			continue
		}
		row := map[string]any{"vmid": vm.VMID, "name": vm.Name, "status": statusOf(vm), "cpus": vm.Cores * vm.Sockets,
			"maxmem": int64(vm.MemoryMiB) << 20, "uptime": uptimeOf(vm), "qmpstatus": qmpStatusOf(vm)}
		if vm.Tags != "" {
			row["tags"] = vm.Tags
		}
		if vm.Template {
			row["template"] = 1
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// configLines renders the VM's config as qemu-server stores it; the digest
// is the SHA1 of that text.
func configLines(vm VM) map[string]any {
	cfg := map[string]any{
		"name":    vm.Name,
		"cores":   vm.Cores,
		"sockets": vm.Sockets,
		"memory":  strconv.Itoa(vm.MemoryMiB), // a property string since PVE 8.1
		"ostype":  "l26",
		"scsihw":  "virtio-scsi-single",
		"boot":    "order=scsi0",
		"scsi0":   fmt.Sprintf("local-lvm:vm-%d-disk-0,iothread=1,size=32G", vm.VMID),
		"vmgenid": "00000000-0000-4000-8000-" + fmt.Sprintf("%012d", vm.VMID),
		"meta":    "creation-qemu=9.2.0,ctime=1700000000",
	}
	smbios := ""
	if vm.UUID != "" {
		smbios = "uuid=" + vm.UUID
	}
	if vm.SKU != "" {
		// Proxmox base64-encodes free-text smbios1 fields and says so.
		smbios = strings.TrimPrefix(smbios+",sku="+base64.StdEncoding.EncodeToString([]byte(vm.SKU))+",base64=1", ",")
	}
	if smbios != "" {
		cfg["smbios1"] = smbios
	}
	for i, n := range vm.Nets {
		cfg["net"+strconv.Itoa(i)] = n
	}
	for i, c := range vm.IPConfigs {
		cfg["ipconfig"+strconv.Itoa(i)] = c
	}
	if vm.Agent != nil {
		cfg["agent"] = "1"
	}
	if vm.Tags != "" {
		cfg["tags"] = vm.Tags
	}
	if vm.Template {
		cfg["template"] = 1
	}
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %v\n", k, cfg[k])
	}
	sum := sha1.Sum([]byte(b.String()))
	cfg["digest"] = hex.EncodeToString(sum[:])
	return cfg
}

func (s *Server) vmConfig(r *request) (any, error) {
	vm, err := s.vmOnNode(r)
	if err != nil {
		return nil, err
	}
	return configLines(vm), nil
}

func (s *Server) vmStatus(r *request) (any, error) {
	vm, err := s.vmOnNode(r)
	if err != nil {
		return nil, err
	}
	res := map[string]any{
		"vmid": vm.VMID, "name": vm.Name, "status": statusOf(vm), "qmpstatus": qmpStatusOf(vm),
		"uptime": uptimeOf(vm), "cpus": vm.Cores * vm.Sockets, "maxmem": int64(vm.MemoryMiB) << 20,
		"maxdisk": int64(32) << 30, "cpu": 0, "mem": 0, "ha": map[string]any{"managed": 0},
	}
	if vm.Agent != nil {
		res["agent"] = 1
	}
	if vm.Tags != "" {
		res["tags"] = vm.Tags
	}
	if statusOf(vm) == "running" {
		res["pid"] = 1000 + vm.VMID
		res["running-qemu"], res["running-machine"] = "9.2.0", "pc-i440fx-9.2+pve1"
	}
	return res, nil
}

func (s *Server) agentInterfaces(r *request) (any, error) {
	vm, err := s.vmOnNode(r)
	if err != nil {
		return nil, err
	}
	if statusOf(vm) != "running" {
		return nil, fail(http.StatusInternalServerError, "VM %d is not running", vm.VMID)
	}
	if vm.Agent == nil {
		return nil, fail(http.StatusInternalServerError, "No QEMU guest agent configured")
	}
	ifaces := []map[string]any{}
	for _, a := range vm.Agent {
		addrs := []map[string]any{}
		for _, p := range a.Addrs {
			typ := "ipv4"
			if p.Addr().Is6() && !p.Addr().Is4In6() {
				typ = "ipv6"
			}
			addrs = append(addrs, map[string]any{"ip-address": p.Addr().String(), "ip-address-type": typ, "prefix": p.Bits()})
		}
		ifaces = append(ifaces, map[string]any{
			"name": a.Name, "hardware-address": strings.ToLower(a.MAC), "ip-addresses": addrs,
			"statistics": map[string]any{"rx-bytes": 0, "tx-bytes": 0, "rx-packets": 0, "tx-packets": 0,
				"rx-errs": 0, "tx-errs": 0, "rx-dropped": 0, "tx-dropped": 0},
		})
	}
	return map[string]any{"result": ifaces}, nil
}

func (s *Server) hostNamesLocked() []string {
	set := map[string]bool{}
	for h := range s.hosts {
		set[h] = true
	}
	for _, vm := range s.vms {
		set[vm.Node] = true
	}
	out := make([]string, 0, len(set))
	for h := range set {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

func (s *Server) sortedVMsLocked() []VM {
	out := make([]VM, 0, len(s.vms))
	for _, vm := range s.vms {
		out = append(out, *vm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VMID < out[j].VMID })
	return out
}

func statusOf(vm VM) string {
	if vm.Status == "paused" {
		return "running"
	}
	return vm.Status
}

func qmpStatusOf(vm VM) string { return vm.Status }

func uptimeOf(vm VM) int {
	if statusOf(vm) == "running" {
		return 3600
	}
	return 0
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
