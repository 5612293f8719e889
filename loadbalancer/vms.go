package loadbalancer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pvelb/pvelb/provider/instances"
	"github.com/pvelb/pvelb/provider/pve"
)

// vmLocation is where a Node's VM lives in Proxmox.
type vmLocation struct {
	Region string
	Ref    pve.VMRef
	Name   string
}

// vmLocator maps providerIDs to VMs through each region's VM list. The list is
// re-read at most once per refresh period, and only when a providerID is not
// found or its entry is older than the period. What was learnt stays known
// when Proxmox cannot be reached: dropping a VM from the firewall's desired
// state would make the reconciler strip the VIPs from it once Proxmox is back.
type vmLocator struct {
	clients map[string]pve.Client
	refresh time.Duration
	now     func() time.Time

	mu     sync.Mutex
	known  map[string]vmLocation // providerID -> VM
	listed map[string]time.Time  // region -> last successful list
}

func newVMLocator(clients map[string]pve.Client, refresh time.Duration) *vmLocator {
	return &vmLocator{
		clients: clients, refresh: refresh, now: time.Now,
		known: map[string]vmLocation{}, listed: map[string]time.Time{},
	}
}

// Locate returns the VM of providerID. A VM that moved to another Proxmox
// host is found again after the refresh period.
func (l *vmLocator) Locate(ctx context.Context, providerID string) (vmLocation, error) {
	region, vmid, err := instances.ParseProviderID(providerID)
	if err != nil {
		return vmLocation{}, err
	}
	c := l.clients[region]
	if c == nil {
		return vmLocation{}, fmt.Errorf("providerID %q: region %q is not in the cloud config", providerID, region)
	}
	l.mu.Lock()
	loc, ok := l.known[providerID]
	stale := l.now().Sub(l.listed[region]) >= l.refresh
	l.mu.Unlock()
	if ok && !stale {
		return loc, nil
	}
	if err := l.list(ctx, region, c); err != nil {
		if ok {
			return loc, nil // keep the last known place
		}
		return vmLocation{}, fmt.Errorf("providerID %q: listing the VMs of Proxmox cluster %q: %w", providerID, region, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if loc, ok := l.known[providerID]; ok {
		return loc, nil
	}
	return vmLocation{}, fmt.Errorf("providerID %q: Proxmox cluster %q has no QEMU VM %d", providerID, region, vmid)
}

func (l *vmLocator) list(ctx context.Context, region string, c pve.Client) error {
	l.mu.Lock()
	fresh := l.now().Sub(l.listed[region]) < l.refresh
	l.mu.Unlock()
	if fresh {
		return nil
	}
	vms, err := c.ClusterVMs(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		return err
	}
	l.listed[region] = l.now()
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
