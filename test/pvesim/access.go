package pvesim

import (
	"net/http"
	"strings"
)

// privilegesPVE9 are the privilege names of PVE 9 (pveum role list); an
// all-privilege token holds every one of them on every path.
var privilegesPVE9 = []string{
	"Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit",
	"Group.Allocate", "Mapping.Audit", "Mapping.Modify", "Mapping.Use", "Permissions.Modify",
	"Pool.Allocate", "Pool.Audit", "Realm.Allocate", "Realm.AllocateUser",
	"SDN.Allocate", "SDN.Audit", "SDN.Use", "Sys.AccessNetwork", "Sys.Audit", "Sys.Console",
	"Sys.Incoming", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog", "User.Modify",
	"VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU",
	"VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory",
	"VM.Config.Network", "VM.Config.Options", "VM.Console", "VM.GuestAgent.Audit",
	"VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite",
	"VM.GuestAgent.Unrestricted", "VM.Migrate", "VM.PowerMgmt", "VM.Replicate", "VM.Snapshot",
	"VM.Snapshot.Rollback",
}

// allPrivileges is the release's privilege list: PVE 8 has VM.Monitor
// where PVE 9 has the VM.GuestAgent.* privileges.
func (s *Server) allPrivileges() []string {
	if !strings.HasPrefix(s.release, "8") {
		return privilegesPVE9
	}
	var out []string
	for _, p := range privilegesPVE9 {
		if !strings.HasPrefix(p, "VM.GuestAgent.") {
			out = append(out, p)
		}
	}
	return append(out, "VM.Monitor")
}

// accessPermissions answers GET /access/permissions (`pveum user token
// permissions`): the calling token's effective privileges on one path, or on
// "/" and every path it holds a scoped grant on. Another user's permissions
// need Sys.Audit on /access, as on Proxmox.
func (s *Server) accessPermissions(r *request) (any, error) {
	t := r.token
	if uid := r.params["userid"]; uid != "" && uid != t.ID && !t.hasPriv("/access", "Sys.Audit") {
		return nil, fail(http.StatusForbidden, "Permission check failed (/access, Sys.Audit)")
	}
	paths := []string{"/"}
	if p := r.params["path"]; p != "" {
		paths = []string{p}
	} else {
		for _, g := range t.Privileges {
			if _, on, ok := strings.Cut(g, "@"); ok && on != "/" {
				paths = append(paths, on)
			}
		}
	}
	all := s.allPrivileges()
	out := map[string]any{}
	for _, p := range paths {
		privs := map[string]any{}
		for _, name := range all {
			if t.hasPriv(p, name) {
				privs[name] = 1
			}
		}
		out[p] = privs
	}
	return out, nil
}
