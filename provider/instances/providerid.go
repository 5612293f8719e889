package instances

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ProviderIDScheme is the scheme of pvelb's providerIDs. It is the same as the
// widely used Proxmox CCM's, so a cluster can switch (spec.providerID is
// immutable on a Node).
const ProviderIDScheme = "proxmox"

const providerIDPrefix = ProviderIDScheme + "://"

// ErrForeignProviderID is returned by ParseProviderID for a providerID of
// another provider (another scheme): pvelb has no say about such a Node.
var ErrForeignProviderID = errors.New("not a proxmox:// providerID")

// FormatProviderID returns "proxmox://<region>/<vmid>".
func FormatProviderID(region string, vmid int) string {
	return providerIDPrefix + region + "/" + strconv.Itoa(vmid)
}

// ParseProviderID splits "proxmox://<region>/<vmid>". A providerID of another
// scheme (or none) yields an error wrapping ErrForeignProviderID; a malformed
// proxmox:// one yields a plain error.
func ParseProviderID(id string) (region string, vmid int, err error) {
	rest, ok := strings.CutPrefix(id, providerIDPrefix)
	if !ok {
		return "", 0, fmt.Errorf("providerID %q: %w", id, ErrForeignProviderID)
	}
	region, num, ok := strings.Cut(rest, "/")
	if !ok || region == "" || num == "" {
		return "", 0, fmt.Errorf("providerID %q: want %s<region>/<vmid>", id, providerIDPrefix)
	}
	if strings.ContainsAny(region, "/?#") {
		return "", 0, fmt.Errorf("providerID %q: region %q contains a '/'", id, region)
	}
	vmid, err = strconv.Atoi(num)
	// Proxmox VMIDs are 100..999999999; leading zeros or signs would make two
	// strings name one VM.
	if err != nil || vmid < 100 || vmid > 999999999 || strconv.Itoa(vmid) != num {
		return "", 0, fmt.Errorf("providerID %q: vmid %q is not a Proxmox VM id (100-999999999)", id, num)
	}
	return region, vmid, nil
}
