package pve

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// Firewall rules and options beyond the IPSets, read (never written) by
// pvelbctl doctor to tell whether the announcers' traffic passes.

const (
	epVMRules        = "/nodes/{node}/qemu/{vmid}/firewall/rules"
	epGroupRules     = "/cluster/firewall/groups/{group}"
	epClusterFWOpts  = "/cluster/firewall/options"
	pathClusterFWOpt = "/cluster/firewall/options"
)

// FirewallRule is one rule of a VM's firewall or of a security group.
type FirewallRule struct {
	Pos    int
	Type   string // "in", "out", "forward" or "group"
	Action string // ACCEPT, DROP, REJECT, or the group's name for type group
	Enable bool
	Proto  string // empty: any
	DPort  string // empty: any; "7947", "7946:7948", "179,7947"
	Source string
	Macro  string
}

// ClusterFirewallOptions is the part of the datacenter firewall's options
// doctor reads.
type ClusterFirewallOptions struct {
	Enable bool
}

// RuleReader reads firewall rules; pvelb's own Client implements it.
type RuleReader interface {
	// VMFirewallRules lists a VM's firewall rules in order.
	VMFirewallRules(ctx context.Context, vm VMRef) ([]FirewallRule, error)
	// GroupRules lists a cluster security group's rules in order.
	GroupRules(ctx context.Context, group string) ([]FirewallRule, error)
	// ClusterFirewallOptions reads the datacenter firewall's options.
	ClusterFirewallOptions(ctx context.Context) (*ClusterFirewallOptions, error)
}

var _ RuleReader = (*client)(nil)

type ruleRow struct {
	Pos    flexInt    `json:"pos"`
	Type   flexString `json:"type"`
	Action flexString `json:"action"`
	Enable flexBool   `json:"enable"`
	Proto  flexString `json:"proto"`
	DPort  flexString `json:"dport"`
	Source flexString `json:"source"`
	Macro  flexString `json:"macro"`
}

func parseRules(data []byte) ([]FirewallRule, error) {
	var rows []ruleRow
	if err := unmarshalData(data, &rows); err != nil {
		return nil, err
	}
	out := make([]FirewallRule, 0, len(rows))
	for _, r := range rows {
		out = append(out, FirewallRule{Pos: int(r.Pos), Type: string(r.Type), Action: string(r.Action), Enable: bool(r.Enable),
			Proto: string(r.Proto), DPort: string(r.DPort), Source: string(r.Source), Macro: string(r.Macro)})
	}
	return out, nil
}

func (c *client) VMFirewallRules(ctx context.Context, vm VMRef) ([]FirewallRule, error) {
	raw, p, err := c.getVM(ctx, vm, epVMRules, "/firewall/rules")
	if err != nil {
		return nil, err
	}
	rules, err := parseRules(raw)
	if err != nil {
		return nil, fmt.Errorf("proxmox GET %s: %w", p, err)
	}
	return rules, nil
}

func (c *client) GroupRules(ctx context.Context, group string) ([]FirewallRule, error) {
	p := "/cluster/firewall/groups/" + url.PathEscape(group)
	raw, err := c.do(ctx, call{method: http.MethodGet, endpoint: epGroupRules, path: p})
	if err != nil {
		return nil, err
	}
	rules, err := parseRules(raw)
	if err != nil {
		return nil, fmt.Errorf("proxmox GET %s: %w", p, err)
	}
	return rules, nil
}

func (c *client) ClusterFirewallOptions(ctx context.Context) (*ClusterFirewallOptions, error) {
	raw, err := c.do(ctx, call{method: http.MethodGet, endpoint: epClusterFWOpts, path: pathClusterFWOpt})
	if err != nil {
		return nil, err
	}
	var b struct {
		Enable flexBool `json:"enable"`
	}
	if err := unmarshalData(raw, &b); err != nil {
		return nil, fmt.Errorf("proxmox GET %s: %w", pathClusterFWOpt, err)
	}
	return &ClusterFirewallOptions{Enable: bool(b.Enable)}, nil
}
