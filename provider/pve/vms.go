package pve

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// Endpoint templates, the "endpoint" metrics label.
const (
	epClusterResources = "/cluster/resources"
	epVMConfig         = "/nodes/{node}/qemu/{vmid}/config"
	epVMStatus         = "/nodes/{node}/qemu/{vmid}/status/current"
	epAgentInterfaces  = "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"
	epVMFirewallOpts   = "/nodes/{node}/qemu/{vmid}/firewall/options"
)

// vmPath is /nodes/{node}/qemu/{vmid}.
func vmPath(vm VMRef) (string, error) {
	if err := validateVMRef(vm); err != nil {
		return "", err
	}
	return fmt.Sprintf("/nodes/%s/qemu/%d", url.PathEscape(vm.Node), vm.VMID), nil
}

func (c *client) ClusterVMs(ctx context.Context) ([]VMResource, error) {
	raw, err := c.do(ctx, call{
		method: http.MethodGet, endpoint: epClusterResources, path: "/cluster/resources",
		query: url.Values{"type": {"vm"}},
	})
	if err != nil {
		return nil, err
	}
	vms, err := parseClusterVMs(raw)
	if err != nil {
		return nil, fmt.Errorf("proxmox GET /cluster/resources: %w", err)
	}
	return vms, nil
}

// getVM reads one per-VM endpoint below /nodes/{node}/qemu/{vmid}.
func (c *client) getVM(ctx context.Context, vm VMRef, endpoint, suffix string) ([]byte, string, error) {
	base, err := vmPath(vm)
	if err != nil {
		return nil, "", err
	}
	p := base + suffix
	raw, err := c.do(ctx, call{method: http.MethodGet, endpoint: endpoint, path: p})
	return raw, p, err
}

func (c *client) VMConfig(ctx context.Context, vm VMRef) (*VMConfig, error) {
	raw, p, err := c.getVM(ctx, vm, epVMConfig, "/config")
	if err != nil {
		return nil, err
	}
	cfg, err := parseVMConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("proxmox GET %s: %w", p, err)
	}
	return cfg, nil
}

func (c *client) VMStatus(ctx context.Context, vm VMRef) (*VMStatus, error) {
	raw, p, err := c.getVM(ctx, vm, epVMStatus, "/status/current")
	if err != nil {
		return nil, err
	}
	st, err := parseVMStatus(raw)
	if err != nil {
		return nil, fmt.Errorf("proxmox GET %s: %w", p, err)
	}
	return st, nil
}

func (c *client) AgentInterfaces(ctx context.Context, vm VMRef) ([]AgentInterface, error) {
	raw, p, err := c.getVM(ctx, vm, epAgentInterfaces, "/agent/network-get-interfaces")
	if err != nil {
		return nil, err
	}
	ifs, err := parseAgentInterfaces(raw)
	if err != nil {
		return nil, fmt.Errorf("proxmox GET %s: %w", p, err)
	}
	return ifs, nil
}

func (c *client) VMFirewallOptions(ctx context.Context, vm VMRef) (*FirewallOptions, error) {
	raw, p, err := c.getVM(ctx, vm, epVMFirewallOpts, "/firewall/options")
	if err != nil {
		return nil, err
	}
	fo, err := parseFirewallOptions(raw)
	if err != nil {
		return nil, fmt.Errorf("proxmox GET %s: %w", p, err)
	}
	return fo, nil
}
