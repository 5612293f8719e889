package instances

import (
	"errors"
	"fmt"
	"regexp"
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

// ErrUUIDProviderID is returned by ParseProviderID for Cluster API Proxmox's
// form proxmox://<uuid>, which names the VM by its SMBIOS uuid, not by region
// and id: look it up with ProviderIDUUID instead.
var ErrUUIDProviderID = errors.New("a proxmox://<smbios-uuid> providerID")

// uuidRE is an SMBIOS uuid as Proxmox writes it in smbios1 (any case).
var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// ProviderIDUUID returns the SMBIOS uuid of a providerID of the form
// proxmox://<uuid>, which Cluster API Proxmox (CAPMOX) gives its Machines'
// Nodes, lowercased as pvelb compares uuids.
func ProviderIDUUID(id string) (string, bool) {
	rest, ok := strings.CutPrefix(id, providerIDPrefix)
	if !ok || !uuidRE.MatchString(rest) {
		return "", false
	}
	return strings.ToLower(rest), true
}

// FormatProviderID returns "proxmox://<region>/<vmid>".
func FormatProviderID(region string, vmid int) string {
	return providerIDPrefix + region + "/" + strconv.Itoa(vmid)
}

// ParseProviderID splits "proxmox://<region>/<vmid>". A providerID of another
// scheme (or none) yields an error wrapping ErrForeignProviderID, one of the
// form proxmox://<uuid> an error wrapping ErrUUIDProviderID; a malformed
// proxmox:// one yields a plain error.
func ParseProviderID(id string) (region string, vmid int, err error) {
	rest, ok := strings.CutPrefix(id, providerIDPrefix)
	if !ok {
		return "", 0, fmt.Errorf("providerID %q: %w", id, ErrForeignProviderID)
	}
	if _, ok := ProviderIDUUID(id); ok {
		return "", 0, fmt.Errorf("providerID %q: %w", id, ErrUUIDProviderID)
	}
	region, num, ok := strings.Cut(rest, "/")
	if !ok || region == "" || num == "" {
		return "", 0, fmt.Errorf("providerID %q: want %s<region>/<vmid> or %s<smbios-uuid>", id, providerIDPrefix, providerIDPrefix)
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
