package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	cloudprovider "k8s.io/cloud-provider"

	"github.com/pvelb/pvelb/provider/instances"
	"github.com/pvelb/pvelb/provider/pve"
)

// vmLocation is where a Node's VM lives in Proxmox.
type vmLocation struct {
	Region string
	Ref    pve.VMRef
	Name   string
}

// vmLocator maps providerIDs to VMs through each region's VM list, read
// through provider/instances (the list pvelb-ccm's InstancesV2 caches). A known
// VM's place is re-read at most once per refresh period (it changes only on
// migration). A providerID missing from the list is a VM created since it was
// read, typically a Node joining: it triggers a fresh list, at most once per
// missingRelistAfter, rather than waiting out the refresh period, during which
// the new node's VM would admit no VIP. What was learnt stays known when
// Proxmox cannot be reached: dropping a VM from the firewall's desired state
// would make the reconciler strip the VIPs from it once Proxmox is back.
type vmLocator struct {
	vms     *instances.Instances
	regions map[string]bool
	refresh time.Duration
	now     func() time.Time

	mu    sync.Mutex
	known map[string]vmLocation // providerID -> VM
	// byUUID holds the VMs of Cluster API's proxmox://<uuid> providerIDs,
	// found by reading VM configs, each re-read after the refresh period.
	byUUID map[string]uuidLocation
	listed map[string]time.Time // region -> last successful list
	// failed remembers a region's last failed list for listRetryAfter, so
	// that one pass over many Nodes of an unreachable cluster costs one
	// (retried, up to the client's 30s budget) call, not one per Node.
	failed map[string]listFailure
}

type uuidLocation struct {
	loc vmLocation
	at  time.Time
}

type listFailure struct {
	at  time.Time
	err error
}

// listRetryAfter is how long a failed VM list is answered from memory.
const listRetryAfter = 5 * time.Second

// missingRelistAfter is the youngest list a providerID missing from it makes
// pvelb read again: one list per few seconds however many Nodes join.
const missingRelistAfter = 2 * time.Second

var (
	// errListFailed marks a Locate error caused by Proxmox not answering the
	// VM list (as opposed to a VM known to be absent): worth trying again soon.
	errListFailed = errors.New("the VM list could not be read")
	// errNotListed marks a providerID that a good VM list does not hold:
	// worth trying again too, since Proxmox may list a new VM a little late.
	errNotListed = errors.New("not in a fresh VM list")
)

func newVMLocator(vms *instances.Instances, refresh time.Duration) *vmLocator {
	regions := map[string]bool{}
	for _, r := range vms.Regions() {
		regions[r] = true
	}
	return &vmLocator{
		vms: vms, regions: regions, refresh: refresh, now: time.Now,
		known: map[string]vmLocation{}, listed: map[string]time.Time{}, byUUID: map[string]uuidLocation{},
		failed: map[string]listFailure{},
	}
}

// Locate returns the VM of providerID. A VM that moved to another Proxmox
// host is found again after the refresh period.
func (l *vmLocator) Locate(ctx context.Context, providerID string) (vmLocation, error) {
	if uuid, ok := instances.ProviderIDUUID(providerID); ok {
		return l.locateUUID(ctx, providerID, uuid)
	}
	region, vmid, err := instances.ParseProviderID(providerID)
	if err != nil {
		return vmLocation{}, err
	}
	if !l.regions[region] {
		return vmLocation{}, fmt.Errorf("providerID %q: region %q is not in the cloud config", providerID, region)
	}
	l.mu.Lock()
	loc, ok := l.known[providerID]
	l.mu.Unlock()
	maxAge := l.refresh
	if !ok {
		maxAge = min(missingRelistAfter, l.refresh)
	}
	if err := l.list(ctx, region, maxAge); err != nil {
		if ok {
			return loc, nil // keep the last known place
		}
		return vmLocation{}, fmt.Errorf("providerID %q: listing the VMs of Proxmox cluster %q: %w: %w", providerID, region, errListFailed, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if loc, ok := l.known[providerID]; ok {
		return loc, nil
	}
	return vmLocation{}, fmt.Errorf("providerID %q: Proxmox cluster %q has no QEMU VM %d (%w)", providerID, region, vmid, errNotListed)
}

// locateUUID is Locate for Cluster API's proxmox://<uuid>: the VM whose
// smbios1 uuid it is, in any region. As for the other form, a place once
// learnt is kept while Proxmox cannot say otherwise.
func (l *vmLocator) locateUUID(ctx context.Context, providerID, uuid string) (vmLocation, error) {
	l.mu.Lock()
	prev, ok := l.byUUID[uuid]
	l.mu.Unlock()
	if ok && l.now().Sub(prev.at) < l.refresh {
		return prev.loc, nil
	}
	vm, err := l.vms.VMOfUUID(ctx, uuid)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		loc := vmLocation{Region: vm.Region, Ref: vm.Ref(), Name: vm.Resource.Name}
		l.byUUID[uuid] = uuidLocation{loc: loc, at: l.now()}
		return loc, nil
	case errors.Is(err, cloudprovider.InstanceNotFound):
		delete(l.byUUID, uuid) // really gone: every VM was read
		return vmLocation{}, fmt.Errorf("providerID %q: no QEMU VM has that smbios1 uuid (%w)", providerID, errNotListed)
	case ok:
		return prev.loc, nil
	}
	return vmLocation{}, fmt.Errorf("providerID %q: finding the VM with that smbios1 uuid: %w: %w", providerID, errListFailed, err)
}

// list reads region's VM list unless the last one is younger than maxAge.
func (l *vmLocator) list(ctx context.Context, region string, maxAge time.Duration) error {
	l.mu.Lock()
	fresh := l.now().Sub(l.listed[region]) < maxAge
	f, failedRecently := l.failed[region]
	failedRecently = failedRecently && l.now().Sub(f.at) < listRetryAfter
	l.mu.Unlock()
	if fresh {
		return nil
	}
	if failedRecently {
		return f.err
	}
	vms, at, err := l.vms.ListVMs(ctx, region, maxAge)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			l.failed[region] = listFailure{at: l.now(), err: err}
		}
		return err
	}
	delete(l.failed, region)
	l.listed[region] = at
	seen := map[string]bool{}
	for _, vm := range vms {
		if vm.Type != "" && vm.Type != "qemu" {
			continue
		}
		id := instances.FormatProviderID(region, vm.VMID)
		seen[id] = true
		l.known[id] = vmLocation{Region: region, Ref: vm.Ref(), Name: vm.Name}
	}
	for id, loc := range l.known {
		if loc.Region == region && !seen[id] {
			delete(l.known, id) // really gone: a fresh list says so
		}
	}
	return nil
}
