// Package pve is pvelb's narrow client for the Proxmox VE API: the few calls the
// provider needs (VM discovery, VM config and status, guest-agent addresses, VM
// firewall options and firewall IPSets), with typed errors that keep the HTTP
// status so callers decide on facts, not on message text.
package pve

import (
	"context"
	"net/netip"
)

// Client is everything pvelb asks of one Proxmox VE cluster. Implementations must
// be safe for concurrent use.
type Client interface {
	// ClusterVMs lists the QEMU VMs and LXC containers the token may audit
	// (GET /cluster/resources?type=vm).
	ClusterVMs(ctx context.Context) ([]VMResource, error)
	// VMConfig reads a VM's current configuration (GET /nodes/{node}/qemu/{vmid}/config).
	VMConfig(ctx context.Context, vm VMRef) (*VMConfig, error)
	// VMStatus reads a VM's runtime status (GET .../status/current).
	VMStatus(ctx context.Context, vm VMRef) (*VMStatus, error)
	// AgentInterfaces asks the QEMU guest agent for the VM's interfaces.
	AgentInterfaces(ctx context.Context, vm VMRef) ([]AgentInterface, error)
	// VMFirewallOptions reads the VM's firewall options (enable, ipfilter, ...).
	VMFirewallOptions(ctx context.Context, vm VMRef) (*FirewallOptions, error)

	// Version reads the Proxmox VE version, e.g. "9.1.3" (GET /version).
	Version(ctx context.Context) (string, error)
	// Permissions returns the privileges userID (a user or token ID) holds
	// on an ACL path (GET /access/permissions).
	Permissions(ctx context.Context, userID, path string) (map[string]bool, error)

	// IPSets lists the IPSets of a scope (the cluster, or one VM).
	IPSets(ctx context.Context, scope Scope) ([]IPSet, error)
	// CreateIPSet creates an empty IPSet. name must be lowercase.
	CreateIPSet(ctx context.Context, scope Scope, name, comment string) error
	// IPSetEntries lists the entries of one IPSet. A missing set is an error
	// for which IsNotFound is true.
	IPSetEntries(ctx context.Context, scope Scope, name string) ([]IPSetEntry, error)
	// AddIPSetEntry adds one entry; cidr is normalised first (host bits zeroed,
	// /32 and /128 stripped) exactly as Proxmox stores it.
	AddIPSetEntry(ctx context.Context, scope Scope, name string, entry IPSetEntry) error
	// UpdateIPSetEntry rewrites the comment and nomatch flag of an existing
	// entry in place (PUT overwrites both). entry.Digest, when not empty, makes
	// Proxmox refuse the update if the set changed meanwhile. Updating in place
	// keeps the address admitted, where a delete and re-add would not.
	UpdateIPSetEntry(ctx context.Context, scope Scope, name string, entry IPSetEntry) error
	// DeleteIPSetEntry removes one entry by its normalised cidr. digest, when not
	// empty, makes Proxmox refuse the delete if the set changed meanwhile.
	DeleteIPSetEntry(ctx context.Context, scope Scope, name, cidr, digest string) error
}

// VMRef names one QEMU VM: the Proxmox host (node) it runs on and its id.
type VMRef struct {
	Node string
	VMID int
}

// Scope says whose firewall an IPSet belongs to: the cluster's when VM is nil,
// otherwise that VM's.
type Scope struct {
	VM *VMRef
}

// ClusterScope is the cluster-level firewall.
var ClusterScope = Scope{}

// VMScope is one VM's firewall.
func VMScope(vm VMRef) Scope { return Scope{VM: &vm} }

// VMResource is one row of /cluster/resources?type=vm.
type VMResource struct {
	VMID     int
	Node     string
	Name     string
	Type     string // "qemu" or "lxc"
	Status   string // "running", "stopped" or "unknown" (host unreachable)
	Template bool
	MaxCPU   int
	MaxMem   uint64 // bytes
	Tags     string
}

// Ref returns the VMRef of the resource.
func (r VMResource) Ref() VMRef { return VMRef{Node: r.Node, VMID: r.VMID} }

// VMConfig is the part of a VM's configuration pvelb reads.
type VMConfig struct {
	Name    string
	SMBIOS1 string         // raw "uuid=...,sku=..." string
	Nets    map[int]string // netN index -> raw "virtio=MAC,bridge=vmbr0,firewall=1"
	// IPConfigs are the cloud-init ipconfigN values by N (raw
	// "ip=192.0.2.10/24,gw=192.0.2.1"); nil when none is set.
	IPConfigs map[int]string
	Cores     int
	Sockets   int
	Memory    int // MiB
	Tags      string
	Digest    string
}

// VMStatus is the part of status/current pvelb reads.
type VMStatus struct {
	Status    string // "running" or "stopped"
	QMPStatus string
	Name      string
	Uptime    int64
}

// AgentInterface is one interface reported by the QEMU guest agent.
type AgentInterface struct {
	Name     string
	MAC      string
	Prefixes []netip.Prefix
}

// FirewallOptions is the part of a VM's firewall options pvelb reads.
type FirewallOptions struct {
	Enable   bool
	IPFilter bool
	// PolicyIn is the VM's inbound policy, "" when unset (Proxmox then
	// drops: a VM's default policy_in is DROP).
	PolicyIn string
	// PolicyOut is the VM's outbound policy, "" when unset (ACCEPT).
	PolicyOut string
	Digest    string
}

// IPSet is one row of an IPSet listing.
type IPSet struct {
	Name    string
	Comment string
	Digest  string
}

// IPSetEntry is one entry of an IPSet. CIDR is as Proxmox stores it: an
// address without /32 or /128, or a network with host bits zeroed.
type IPSetEntry struct {
	CIDR    string
	Comment string
	NoMatch bool
	Digest  string
}
