// Package instances implements cloudprovider.InstancesV2 for Kubernetes Nodes
// that are Proxmox VE QEMU VMs, over one or more Proxmox clusters (regions).
//
// A Node is matched to its VM by its providerID (proxmox://<region>/<vmid>)
// or, before it has one, by its SMBIOS system UUID, never by name alone. The
// node lifecycle controller deletes a Node when InstanceExists answers false
// without an error, so false is given only when the VM is known to be gone;
// every doubt (foreign providerID, unknown region, API failure) keeps the Node.
package instances

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/pve"
)

const defaultSearchConcurrency = 8

// Region is one Proxmox cluster and its client.
type Region struct {
	Name   string
	Client pve.Client
}

// Options configures New.
type Options struct {
	Regions []Region
	// Addresses selects whether guest-agent addresses are reported.
	Addresses config.AddressMode
	// CacheTTL is how long VM lists and VM configs are reused (0: not cached,
	// concurrent identical calls are still shared).
	CacheTTL time.Duration
	// Clock returns the current time; nil means time.Now. Tests inject one.
	Clock func() time.Time
	// SearchConcurrency bounds parallel VM config reads during a UUID search
	// (default 8).
	SearchConcurrency int
}

// Instances is pvelb's cloudprovider.InstancesV2.
type Instances struct {
	regions     map[string]*region
	regionOrder []string
	addresses   config.AddressMode
	concurrency int
}

var _ cloudprovider.InstancesV2 = (*Instances)(nil)

type region struct {
	name    string
	client  pve.Client
	vms     *ttlCache[struct{}, []pve.VMResource]
	configs *ttlCache[pve.VMRef, *pve.VMConfig]
}

// New builds Instances over the given regions.
func New(opts Options) (*Instances, error) {
	if len(opts.Regions) == 0 {
		return nil, errors.New("instances: no regions")
	}
	now := opts.Clock
	if now == nil {
		now = time.Now
	}
	i := &Instances{
		regions:     map[string]*region{},
		addresses:   opts.Addresses,
		concurrency: opts.SearchConcurrency,
	}
	if i.addresses == "" {
		i.addresses = config.AddressesProvided
	}
	if i.concurrency <= 0 {
		i.concurrency = defaultSearchConcurrency
	}
	for _, r := range opts.Regions {
		if r.Name == "" || r.Client == nil {
			return nil, fmt.Errorf("instances: region %q has no name or no client", r.Name)
		}
		if _, dup := i.regions[r.Name]; dup {
			return nil, fmt.Errorf("instances: duplicate region %q", r.Name)
		}
		i.regions[r.Name] = &region{
			name:    r.Name,
			client:  r.Client,
			vms:     newTTLCache[struct{}, []pve.VMResource](opts.CacheTTL, now),
			configs: newTTLCache[pve.VMRef, *pve.VMConfig](opts.CacheTTL, now),
		}
		i.regionOrder = append(i.regionOrder, r.Name)
	}
	return i, nil
}

// VM is a Node's Proxmox VM as pvelb found it.
type VM struct {
	Region   string
	Resource pve.VMResource
	// Config is the VM's configuration (from the cache, at most CacheTTL old).
	Config *pve.VMConfig
}

// ProviderID returns the VM's providerID.
func (vm *VM) ProviderID() string { return FormatProviderID(vm.Region, vm.Resource.VMID) }

// Ref returns the VM's node and id.
func (vm *VM) Ref() pve.VMRef { return vm.Resource.Ref() }

// Client returns the Proxmox client of a region, or nil if it is not configured.
func (i *Instances) Client(regionName string) pve.Client {
	if r := i.regions[regionName]; r != nil {
		return r.client
	}
	return nil
}

// InstanceExists answers false only when pvelb is sure the Node's VM is gone:
// the Node has a proxmox:// providerID of a configured region, that region's
// VM list was read successfully (a cached miss is re-read), and no QEMU VM has
// that id. A VM on an unreachable host is listed (status "unknown") and so
// exists. A Node without a providerID, or with another provider's, is left
// alone (true). Unknown regions and API failures are errors, which the node
// lifecycle controller logs and retries without deleting anything.
func (i *Instances) InstanceExists(ctx context.Context, node *v1.Node) (bool, error) {
	logger := klog.FromContext(ctx).WithValues("node", klog.KObj(node))
	if node.Spec.ProviderID == "" {
		// Only a providerID names one VM for good; a UUID miss may just be a
		// VM the token cannot see. Never report such a Node gone.
		return true, nil
	}
	if uuid, ok := ProviderIDUUID(node.Spec.ProviderID); ok {
		// Cluster API's form: the uuid cannot be double-checked against the
		// token's rights the way a VM id can (confirmGone), and Cluster API
		// deletes the Nodes of the Machines it deletes itself.
		vm, err := i.findUUID(ctx, node, uuid)
		if err != nil && !errors.Is(err, cloudprovider.InstanceNotFound) {
			return true, err
		}
		if vm == nil {
			logger.Info("No VM has the uuid of the Node's providerID; Node kept (pvelb deletes only Nodes with proxmox://<region>/<vmid> providerIDs)",
				"providerID", node.Spec.ProviderID)
		}
		return true, nil
	}
	r, res, err := i.lookupProviderID(ctx, node.Spec.ProviderID, false)
	if errors.Is(err, ErrForeignProviderID) {
		logger.V(4).Info("Node has another provider's providerID; not ours to judge", "providerID", node.Spec.ProviderID)
		return true, nil
	}
	if err != nil {
		return true, fmt.Errorf("node %s: %w", node.Name, err)
	}
	if res == nil {
		if err := i.confirmGone(ctx, r, node); err != nil {
			return true, fmt.Errorf("node %s: %w", node.Name, err)
		}
		logger.Info("VM of Node no longer exists in Proxmox", "region", r.name, "providerID", node.Spec.ProviderID)
		return false, nil
	}
	return true, nil
}

// maxGoneProbes bounds the hosts asked directly before a Node is declared gone.
const maxGoneProbes = 32

// confirmGone double-checks a VM missing from the region's list. Proxmox
// filters /cluster/resources by the token's VM.Audit privilege, so a token
// that lost its rights sees no VMs; treating that as "gone" would delete every
// Node. The VM's config is therefore asked for directly on the host the Node
// was last labelled with and on every host in the list: a permission check
// comes before the existence check there, so a 403 reveals the rights
// problem. Only when every asked host says the config does not exist is the
// VM gone; any other answer, or nobody to ask, is an error.
func (i *Instances) confirmGone(ctx context.Context, r *region, node *v1.Node) error {
	_, vmid, err := ParseProviderID(node.Spec.ProviderID)
	if err != nil {
		return err
	}
	var hosts []string
	seen := map[string]bool{}
	addHost := func(h string) {
		if h != "" && !seen[h] && len(hosts) < maxGoneProbes {
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	addHost(node.Labels[names.LabelProxmoxHost])
	addHost(node.Labels[v1.LabelTopologyZone])
	vms, err := r.list(ctx, false)
	if err != nil {
		return fmt.Errorf("listing VMs of region %s: %w", r.name, err)
	}
	for _, res := range vms {
		addHost(res.Node)
	}
	if len(hosts) == 0 {
		return fmt.Errorf("VM %d is not listed in region %s, which lists no VMs at all and the Node names no host; "+
			"not treating the Node as gone (does the token have VM.Audit?)", vmid, r.name)
	}
	for _, h := range hosts {
		ref := pve.VMRef{Node: h, VMID: vmid}
		_, err := r.client.VMConfig(ctx, ref)
		switch {
		case err == nil:
			return fmt.Errorf("VM %d is not listed in region %s but its config exists on %s; not treating the Node as gone", vmid, r.name, h)
		case pve.IsNotFound(err):
			continue
		case pve.IsAuth(err):
			return fmt.Errorf("VM %d is not listed in region %s and the token may not read it (%w); "+
				"not treating the Node as gone: grant VM.Audit on /vms", vmid, r.name, err)
		default:
			return fmt.Errorf("VM %d is not listed in region %s; confirming on host %s failed: %w", vmid, r.name, h, err)
		}
	}
	return nil
}

// InstanceShutdown is true when the Node's VM is stopped. A VM on an
// unreachable host (status "unknown") is not known to be shut down.
func (i *Instances) InstanceShutdown(ctx context.Context, node *v1.Node) (bool, error) {
	var res *pve.VMResource
	if _, isUUID := ProviderIDUUID(node.Spec.ProviderID); node.Spec.ProviderID != "" && !isUUID {
		var err error
		_, res, err = i.lookupProviderID(ctx, node.Spec.ProviderID, false)
		if errors.Is(err, ErrForeignProviderID) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("node %s: %w", node.Name, err)
		}
	} else {
		vm, err := i.VMForNode(ctx, node)
		if errors.Is(err, cloudprovider.InstanceNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		res = &vm.Resource
	}
	return res != nil && res.Status == "stopped", nil
}

// InstanceMetadata returns the Node's providerID, instance type, topology
// (region = Proxmox cluster, zone = Proxmox host), labels and addresses.
func (i *Instances) InstanceMetadata(ctx context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	logger := klog.FromContext(ctx).WithValues("node", klog.KObj(node))
	provided, haveProvided, err := ProvidedNodeIPs(node)
	if err != nil {
		return nil, err
	}
	vm, err := i.VMForNode(ctx, node)
	if err != nil {
		return nil, err
	}
	res := vm.Resource
	providerID := vm.ProviderID()
	if _, ok := ProviderIDUUID(node.Spec.ProviderID); ok {
		providerID = node.Spec.ProviderID // immutable: the Node keeps Cluster API's form
	}
	md := &cloudprovider.InstanceMetadata{
		ProviderID:       providerID,
		InstanceType:     InstanceType(vm.Config, res),
		Region:           vm.Region,
		AdditionalLabels: map[string]string{names.LabelProxmoxVMID: strconv.Itoa(res.VMID)},
	}
	if IsLabelValue(res.Node) {
		md.Zone = res.Node
		md.AdditionalLabels[names.LabelProxmoxHost] = res.Node
	} else {
		logger.Info("Proxmox host name is not a valid label value; zone left unset", "host", res.Node)
	}

	var agent []netip.Addr
	if i.addresses == config.AddressesProvidedAndAgent && res.Status == "running" {
		ifaces, err := i.regions[vm.Region].client.AgentInterfaces(ctx, res.Ref())
		if err != nil {
			// The agent is optional and often not ready during boot; the
			// provided IPs are enough to initialise the Node.
			logger.Info("Guest agent addresses unavailable, using the provided node IPs only", "vmid", res.VMID, "err", err)
		} else {
			agent = AgentAddresses(ifaces)
		}
	}
	md.NodeAddresses = NodeAddresses(node, provided, haveProvided, agent)
	return md, nil
}

// VMForNode finds the Node's VM: by providerID when it has one (the uuid of
// Cluster API's proxmox://<uuid> form is looked up like a systemUUID), else
// by SMBIOS UUID. The error wraps cloudprovider.InstanceNotFound when no VM
// matches.
func (i *Instances) VMForNode(ctx context.Context, node *v1.Node) (*VM, error) {
	if node.Spec.ProviderID == "" {
		return i.findByUUID(ctx, node)
	}
	if uuid, ok := ProviderIDUUID(node.Spec.ProviderID); ok {
		return i.findUUID(ctx, node, uuid)
	}
	r, res, err := i.lookupProviderID(ctx, node.Spec.ProviderID, false)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", node.Name, err)
	}
	if res == nil {
		return nil, fmt.Errorf("node %s: VM %s: %w", node.Name, node.Spec.ProviderID, cloudprovider.InstanceNotFound)
	}
	cfg, err := r.config(ctx, res.Ref())
	if pve.IsNotFound(err) {
		// The VM moved to another host since the list was read.
		if _, res, err = i.lookupProviderID(ctx, node.Spec.ProviderID, true); err == nil {
			if res == nil {
				return nil, fmt.Errorf("node %s: VM %s: %w", node.Name, node.Spec.ProviderID, cloudprovider.InstanceNotFound)
			}
			cfg, err = r.config(ctx, res.Ref())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("node %s: reading config of VM %d on %s: %w", node.Name, res.VMID, res.Node, err)
	}
	return &VM{Region: r.name, Resource: *res, Config: cfg}, nil
}

// lookupProviderID resolves a proxmox:// providerID to its region and VM row.
// res is nil (with no error) only when the region's list, re-read uncached,
// holds no QEMU VM with that id.
func (i *Instances) lookupProviderID(ctx context.Context, providerID string, fresh bool) (*region, *pve.VMResource, error) {
	regionName, vmid, err := ParseProviderID(providerID)
	if err != nil {
		return nil, nil, err
	}
	r := i.regions[regionName]
	if r == nil {
		return nil, nil, fmt.Errorf("providerID %q: region %q is not in the cloud config", providerID, regionName)
	}
	for _, f := range []bool{fresh, true} {
		vms, err := r.list(ctx, f)
		if err != nil {
			return r, nil, fmt.Errorf("listing VMs of region %s: %w", r.name, err)
		}
		if res := findVMID(vms, vmid); res != nil {
			return r, res, nil
		}
		if f {
			break
		}
	}
	return r, nil, nil
}

func findVMID(vms []pve.VMResource, vmid int) *pve.VMResource {
	for k := range vms {
		if vms[k].VMID == vmid && vms[k].Type == "qemu" {
			res := vms[k]
			return &res
		}
	}
	return nil
}

// ListVMs returns a region's VM list (GET /cluster/resources) at most
// maxAge old, from the cache InstancesV2 uses too, and when it was read:
// one list serves the Node lookups and the firewall's VM index.
func (i *Instances) ListVMs(ctx context.Context, regionName string, maxAge time.Duration) ([]pve.VMResource, time.Time, error) {
	r := i.regions[regionName]
	if r == nil {
		return nil, time.Time{}, fmt.Errorf("region %q is not in the cloud config", regionName)
	}
	return r.vms.getWithin(ctx, struct{}{}, maxAge, r.client.ClusterVMs)
}

// HostOf returns the Proxmox host a Node's VM runs on now, for either
// proxmox:// providerID form: from the region's VM list at most maxAge old
// (the list InstancesV2 and the firewall share), or for proxmox://<uuid> from
// the uuid search. found is false, with no error, when no VM has the
// providerID, and for providerIDs that are not pvelb's.
func (i *Instances) HostOf(ctx context.Context, providerID string, maxAge time.Duration) (host string, found bool, err error) {
	if uuid, ok := ProviderIDUUID(providerID); ok {
		vm, err := i.VMOfUUID(ctx, uuid)
		switch {
		case errors.Is(err, cloudprovider.InstanceNotFound):
			return "", false, nil
		case err != nil:
			return "", false, err
		}
		return vm.Resource.Node, true, nil
	}
	regionName, vmid, err := ParseProviderID(providerID)
	if err != nil || i.regions[regionName] == nil {
		return "", false, nil
	}
	vms, _, err := i.ListVMs(ctx, regionName, maxAge)
	if err != nil {
		return "", false, err
	}
	if res := findVMID(vms, vmid); res != nil {
		return res.Node, true, nil
	}
	return "", false, nil
}

// Regions returns the names of the configured regions, in config order.
func (i *Instances) Regions() []string { return slices.Clone(i.regionOrder) }

func (r *region) list(ctx context.Context, fresh bool) ([]pve.VMResource, error) {
	return r.vms.get(ctx, struct{}{}, fresh, r.client.ClusterVMs)
}

func (r *region) config(ctx context.Context, ref pve.VMRef) (*pve.VMConfig, error) {
	cfg, err := r.configs.get(ctx, ref, false, func(ctx context.Context) (*pve.VMConfig, error) {
		return r.client.VMConfig(ctx, ref)
	})
	if err == nil && cfg == nil {
		err = fmt.Errorf("empty config for VM %d on %s", ref.VMID, ref.Node)
	}
	return cfg, err
}

// findByUUID matches a Node without providerID to the one QEMU VM (not a
// template) in any region whose smbios1 uuid equals the Node's systemUUID.
// Two matches are an error: guessing would bind the Node to the wrong VM for
// good (providerID is immutable). A cached miss is retried with fresh lists,
// since a Node usually registers moments after its VM was created.
func (i *Instances) findByUUID(ctx context.Context, node *v1.Node) (*VM, error) {
	uuid := strings.ToLower(strings.TrimSpace(node.Status.NodeInfo.SystemUUID))
	if uuid == "" {
		return nil, fmt.Errorf("node %s has no providerID and no status.nodeInfo.systemUUID yet; cannot match it to a VM", node.Name)
	}
	return i.findUUID(ctx, node, uuid)
}

// VMOfUUID finds the one QEMU VM whose smbios1 uuid is uuid (lowercase), as
// for a Node whose providerID is Cluster API's proxmox://<uuid>. The error
// wraps cloudprovider.InstanceNotFound when no VM has it.
func (i *Instances) VMOfUUID(ctx context.Context, uuid string) (*VM, error) {
	return i.findUUID(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: providerIDPrefix + uuid}}, uuid)
}

// findUUID is findByUUID for a given (lowercase) uuid.
func (i *Instances) findUUID(ctx context.Context, node *v1.Node, uuid string) (*VM, error) {
	vm, err := i.searchUUID(ctx, node, uuid, false)
	if err == nil && vm == nil {
		vm, err = i.searchUUID(ctx, node, uuid, true)
	}
	if err != nil {
		return nil, err
	}
	if vm == nil {
		return nil, fmt.Errorf("node %s: no Proxmox QEMU VM has smbios1 uuid %s (regions %s): %w",
			node.Name, uuid, strings.Join(i.regionOrder, ", "), cloudprovider.InstanceNotFound)
	}
	return vm, nil
}

func (i *Instances) searchUUID(ctx context.Context, node *v1.Node, uuid string, fresh bool) (*VM, error) {
	logger := klog.FromContext(ctx).WithValues("node", klog.KObj(node), "systemUUID", uuid)
	var (
		mu         sync.Mutex
		matches    []VM
		incomplete []error
	)
	sem := make(chan struct{}, i.concurrency)
	var wg sync.WaitGroup
	for _, name := range i.regionOrder {
		r := i.regions[name]
		r.configs.prune()
		vms, err := r.list(ctx, fresh)
		if err != nil {
			incomplete = append(incomplete, fmt.Errorf("listing VMs of region %s: %w", name, err))
			continue
		}
		for _, res := range vms {
			if res.Type != "qemu" || res.Template {
				continue
			}
			wg.Go(func() {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					mu.Lock()
					incomplete = append(incomplete, ctx.Err())
					mu.Unlock()
					return
				}
				defer func() { <-sem }()
				cfg, err := r.config(ctx, res.Ref())
				mu.Lock()
				defer mu.Unlock()
				switch {
				case pve.IsNotFound(err):
					// Deleted or migrated since the list was read.
					r.configs.forget(res.Ref())
				case err != nil:
					incomplete = append(incomplete, fmt.Errorf("reading config of VM %d on %s/%s (status %s): %w",
						res.VMID, name, res.Node, res.Status, err))
				case ParseSMBIOS1(cfg.SMBIOS1).UUID == uuid:
					matches = append(matches, VM{Region: name, Resource: res, Config: cfg})
				}
			})
		}
	}
	wg.Wait()

	switch len(matches) {
	case 0:
		if len(incomplete) > 0 {
			return nil, fmt.Errorf("node %s: no VM with smbios1 uuid %s found, and not every VM could be checked: %w",
				node.Name, uuid, errors.Join(incomplete...))
		}
		return nil, nil
	case 1:
	default:
		slices.SortFunc(matches, func(a, b VM) int { return strings.Compare(a.ProviderID(), b.ProviderID()) })
		var ids []string
		for _, m := range matches {
			ids = append(ids, fmt.Sprintf("%s (%q on %s)", m.ProviderID(), m.Resource.Name, m.Resource.Node))
		}
		return nil, fmt.Errorf("node %s: smbios1 uuid %s is used by %d VMs: %s; refusing to guess, give each VM a unique smbios1 uuid",
			node.Name, uuid, len(matches), strings.Join(ids, ", "))
	}
	m := matches[0]
	if len(incomplete) > 0 {
		// A VM that could not be read might carry the same UUID; the match
		// is still the only candidate pvelb can see, and waiting for every
		// host of every cluster would stall all new Nodes during maintenance.
		logger.Info("Matched Node by UUID although some VMs could not be checked for a duplicate UUID",
			"providerID", m.ProviderID(), "unchecked", errors.Join(incomplete...).Error())
	}
	if !namesMatch(m.Resource.Name, node.Name) {
		logger.Info("Warning: VM name differs from Node name; matched by UUID", "providerID", m.ProviderID(), "vmName", m.Resource.Name)
	}
	return &m, nil
}

// namesMatch compares a VM name and a Node name, allowing either to be the
// short form of the other (Node names are often FQDNs).
func namesMatch(vmName, nodeName string) bool {
	short := func(s string) string { h, _, _ := strings.Cut(s, "."); return h }
	return strings.EqualFold(vmName, nodeName) || strings.EqualFold(short(vmName), short(nodeName))
}
