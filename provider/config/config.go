// Package config parses and validates pvelb's cloud config (the file given to
// pvelb-ccm with --cloud-config). Parsing is strict: unknown keys, duplicate
// keys, wrong types and invalid values are all reported, each naming its field
// path (for example `clusters[1].url: must be an https URL`), and all problems
// are returned together so a user fixes the file in one pass.
package config

import (
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

// Defaults applied to fields the file leaves out.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultCacheTTL     = 15 * time.Second
	DefaultClusterIPSet = "pvelb-vips"
	DefaultResyncPeriod = 60 * time.Second
	DefaultNIC          = "net0"
	// DefaultLabelSyncPeriod is how often Nodes' host labels are compared
	// with their VMs' current Proxmox host.
	DefaultLabelSyncPeriod = 30 * time.Second
)

// AddressMode says where Instances takes a Node's addresses from.
type AddressMode string

const (
	// AddressesProvided reports only the addresses the kubelet was given
	// (--node-ip, annotation alpha.kubernetes.io/provided-node-ip).
	AddressesProvided AddressMode = "provided"
	// AddressesProvidedAndAgent also reports the guest agent's addresses.
	AddressesProvidedAndAgent AddressMode = "provided-and-agent"
)

// Config is the validated cloud config with defaults applied.
type Config struct {
	Clusters     []Cluster
	Instances    Instances
	Firewall     Firewall
	LoadBalancer LoadBalancer
}

// Cluster is one Proxmox VE cluster; its Region names it everywhere
// (providerID, topology.kubernetes.io/region).
type Cluster struct {
	Region string
	// URLs are the API bases (each ending in /api2/json) of the cluster's
	// Proxmox hosts, from `url` or `urls`, in preference order: any host
	// serves the whole cluster's API, and the client fails over between
	// them (see pve.Options.URLs).
	URLs    []string
	TokenID string
	// TokenSecret is loaded from tokenSecret or tokenSecretFile; it never prints.
	TokenSecret Secret
	// TokenSecretFile is the resolved (absolute when the base dir is) path the
	// secret came from, empty when it was inline.
	TokenSecretFile string
	// CAFile is the resolved path of a PEM bundle, empty for the system roots.
	CAFile             string
	InsecureSkipVerify bool
	Timeout            time.Duration
}

// Instances configures the InstancesV2 implementation.
type Instances struct {
	Addresses AddressMode
	// CacheTTL is how long VM lists and VM configs are reused; 0 disables
	// caching (concurrent identical calls are still shared).
	CacheTTL time.Duration
	// LabelSyncPeriod is how often the zone and pvelb.io/proxmox-host labels
	// of initialised Nodes are brought in line with their VMs' current host
	// (after live migrations); 0 turns that off.
	LabelSyncPeriod time.Duration
	// ApproveKubeletServingCertificates turns on the approver of kubelet
	// serving certificate requests (package csrapprover).
	ApproveKubeletServingCertificates bool
}

// Firewall configures admission of VIPs in Proxmox firewall IPSets.
type Firewall struct {
	Enabled      bool
	ClusterIPSet string
	NICs         []string
	AdmitRanges  bool
	ResyncPeriod time.Duration
	// ExtraAddresses are addresses other than LoadBalancer VIPs that some
	// Nodes' VMs send from, such as Talos's shared control-plane VIP.
	ExtraAddresses []ExtraAddress
}

// ExtraAddress is a named set of addresses admitted, like a VIP, in the
// ipfilter sets of the VMs of the Nodes NodeSelector selects.
type ExtraAddress struct {
	Name      string
	Addresses []netip.Addr
	// NodeSelector is a label selector in kubectl's syntax
	// ("node-role.kubernetes.io/control-plane"); empty selects every Node.
	NodeSelector labels.Selector
}

// ExtraOwnerPrefix starts the owner name an extra address is marked with in
// IPSet comments, in place of a Service's namespace/name: "extraAddresses/"
// is no namespace (namespaces are lowercase), so it names no Service.
const ExtraOwnerPrefix = "extraAddresses/"

// LoadBalancer configures the LoadBalancer implementation.
type LoadBalancer struct {
	ServeClasslessServices bool
}

// Region returns the cluster with the given region, or nil.
func (c *Config) Region(region string) *Cluster {
	for i := range c.Clusters {
		if c.Clusters[i].Region == region {
			return &c.Clusters[i]
		}
	}
	return nil
}
