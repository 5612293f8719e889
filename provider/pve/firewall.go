package pve

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

const (
	epClusterIPSets     = "/cluster/firewall/ipset"
	epClusterIPSet      = "/cluster/firewall/ipset/{name}"
	epClusterIPSetEntry = "/cluster/firewall/ipset/{name}/{cidr}"
	epVMIPSets          = "/nodes/{node}/qemu/{vmid}/firewall/ipset"
	epVMIPSet           = "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}"
	epVMIPSetEntry      = "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}"
)

// ipsetPaths returns the path and endpoint template of a scope's IPSet list
// (name empty), one IPSet, or one entry (cidrSeg not empty, already escaped).
func ipsetPaths(scope Scope, name, cidrSeg string) (path, endpoint string, err error) {
	if scope.VM == nil {
		path, endpoint = "/cluster/firewall/ipset", epClusterIPSets
	} else {
		base, err := vmPath(*scope.VM)
		if err != nil {
			return "", "", err
		}
		path, endpoint = base+"/firewall/ipset", epVMIPSets
	}
	if name == "" {
		return path, endpoint, nil
	}
	if err := ValidateIPSetName(name); err != nil {
		return "", "", err
	}
	path += "/" + name
	if scope.VM == nil {
		endpoint = epClusterIPSet
	} else {
		endpoint = epVMIPSet
	}
	if cidrSeg == "" {
		return path, endpoint, nil
	}
	path += "/" + cidrSeg
	if scope.VM == nil {
		endpoint = epClusterIPSetEntry
	} else {
		endpoint = epVMIPSetEntry
	}
	return path, endpoint, nil
}

func (c *client) IPSets(ctx context.Context, scope Scope) ([]IPSet, error) {
	p, ep, err := ipsetPaths(scope, "", "")
	if err != nil {
		return nil, err
	}
	raw, err := c.do(ctx, call{method: http.MethodGet, endpoint: ep, path: p})
	if err != nil {
		return nil, err
	}
	sets, err := parseIPSets(raw)
	if err != nil {
		return nil, fmt.Errorf("proxmox GET %s: %w", p, err)
	}
	return sets, nil
}

func (c *client) CreateIPSet(ctx context.Context, scope Scope, name, comment string) error {
	if err := ValidateIPSetName(name); err != nil {
		return err
	}
	p, ep, err := ipsetPaths(scope, "", "")
	if err != nil {
		return err
	}
	body := map[string]any{"name": name}
	if comment != "" {
		body["comment"] = comment
	}
	_, err = c.do(ctx, call{method: http.MethodPost, endpoint: ep, path: p, body: body, duplicateOKOnRetry: true})
	return err
}

func (c *client) IPSetEntries(ctx context.Context, scope Scope, name string) ([]IPSetEntry, error) {
	p, ep, err := ipsetPaths(scope, name, "")
	if err != nil {
		return nil, err
	}
	raw, err := c.do(ctx, call{method: http.MethodGet, endpoint: ep, path: p})
	if err != nil {
		return nil, err
	}
	entries, err := parseIPSetEntries(raw)
	if err != nil {
		return nil, fmt.Errorf("proxmox GET %s: %w", p, err)
	}
	return entries, nil
}

func (c *client) AddIPSetEntry(ctx context.Context, scope Scope, name string, entry IPSetEntry) error {
	cidr, err := NormalizeCIDR(entry.CIDR)
	if err != nil {
		return err
	}
	p, ep, err := ipsetPaths(scope, name, "")
	if err != nil {
		return err
	}
	body := map[string]any{"cidr": cidr}
	if entry.Comment != "" {
		body["comment"] = entry.Comment
	}
	if entry.NoMatch {
		body["nomatch"] = 1 // Proxmox booleans are 0/1
	}
	_, err = c.do(ctx, call{method: http.MethodPost, endpoint: ep, path: p, body: body, duplicateOKOnRetry: true})
	return err
}

func (c *client) DeleteIPSetEntry(ctx context.Context, scope Scope, name, cidr, digest string) error {
	seg, err := cidrSegment(cidr)
	if err != nil {
		return err
	}
	p, ep, err := ipsetPaths(scope, name, seg)
	if err != nil {
		return err
	}
	// A DELETE body is refused by Proxmox: parameters go in the query.
	var q url.Values
	if digest != "" {
		q = url.Values{"digest": {digest}}
	}
	_, err = c.do(ctx, call{method: http.MethodDelete, endpoint: ep, path: p, query: q})
	return err
}

func (c *client) UpdateIPSetEntry(ctx context.Context, scope Scope, name string, entry IPSetEntry) error {
	seg, err := cidrSegment(entry.CIDR)
	if err != nil {
		return err
	}
	p, ep, err := ipsetPaths(scope, name, seg)
	if err != nil {
		return err
	}
	nomatch := 0
	if entry.NoMatch {
		nomatch = 1
	}
	body := map[string]any{"comment": entry.Comment, "nomatch": nomatch}
	if entry.Digest != "" {
		body["digest"] = entry.Digest
	}
	_, err = c.do(ctx, call{method: http.MethodPut, endpoint: ep, path: p, body: body})
	return err
}
