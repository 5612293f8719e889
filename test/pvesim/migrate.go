package pvesim

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// migrateVM answers POST /nodes/{node}/qemu/{vmid}/migrate (qm migrate):
// the VM moves to target at once, with its config and firewall (both are
// keyed by VMID, as /etc/pve is cluster-wide), and the answer is the task's
// UPID as Proxmox returns it. A running VM needs online=1, as in qemu-server.
func (s *Server) migrateVM(r *request) (any, error) {
	vm, err := s.vmOnNode(r)
	if err != nil {
		return nil, err
	}
	target := r.params["target"]
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case target == vm.Node:
		return nil, fail(http.StatusInternalServerError, "target is local node.")
	case !s.knownHostLocked(target):
		return nil, fail(http.StatusInternalServerError, "no such cluster node '%s'", target)
	case s.offline[target]:
		return nil, fail(http.StatusInternalServerError, "target node '%s' is not online", target)
	case statusOf(vm) == "running" && r.params["online"] != "1":
		return nil, fail(http.StatusInternalServerError, "can't migrate running VM without --online")
	}
	s.vms[vm.VMID].Node = target
	now := time.Now().Unix()
	return fmt.Sprintf("UPID:%s:%08X:%08X:%08X:qmigrate:%s:%s:", vm.Node, 4242+vm.VMID, now&0xffffffff, now&0xffffffff,
		strconv.Itoa(vm.VMID), r.token.ID), nil
}
