package pve

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

const (
	epVersion     = "/version"
	epPermissions = "/access/permissions"
)

func (c *client) Version(ctx context.Context) (string, error) {
	raw, err := c.do(ctx, call{method: http.MethodGet, endpoint: epVersion, path: epVersion})
	if err != nil {
		return "", err
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := unmarshalData(raw, &v); err != nil {
		return "", fmt.Errorf("proxmox GET %s: %w", epVersion, err)
	}
	return v.Version, nil
}

func (c *client) Permissions(ctx context.Context, userID, path string) (map[string]bool, error) {
	raw, err := c.do(ctx, call{method: http.MethodGet, endpoint: epPermissions, path: epPermissions,
		query: url.Values{"userid": {userID}, "path": {path}}})
	if err != nil {
		return nil, err
	}
	var got map[string]map[string]any
	if err := unmarshalData(raw, &got); err != nil {
		return nil, fmt.Errorf("proxmox GET %s: %w", epPermissions, err)
	}
	privs := map[string]bool{}
	// Values are propagate flags; holding the privilege is what counts.
	for _, m := range got {
		for k := range m {
			privs[k] = true
		}
	}
	return privs, nil
}

// Release is what pvelb must decide differently between the Proxmox VE
// major versions it supports, in one table. (The VM config's memory, a
// number before 8.1 and "[current=]<MiB>[,...]" since, needs no entry:
// parseVMConfig reads both forms by their content.)
type Release struct {
	Major int
	// GuestAgentPrivilege lets a token ask the guest agent for addresses.
	GuestAgentPrivilege string
}

var releases = []Release{
	{Major: 8, GuestAgentPrivilege: "VM.Monitor"},
	{Major: 9, GuestAgentPrivilege: "VM.GuestAgent.Audit"},
}

// ReleaseOf returns the facts for a version string such as "9.1.3"; an
// unknown or newer version gets the newest release's, an older one the
// oldest's.
func ReleaseOf(version string) Release {
	major, _ := strconv.Atoi(strings.SplitN(version, ".", 2)[0])
	return ReleaseOfMajor(major)
}

// ReleaseOfMajor is ReleaseOf for a major version; 0 (unknown) gets the
// newest release's facts.
func ReleaseOfMajor(major int) Release {
	if major <= 0 {
		return releases[len(releases)-1]
	}
	r := releases[0]
	for _, x := range releases {
		if x.Major <= major {
			r = x
		}
	}
	return r
}
