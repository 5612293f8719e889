package firewall

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pvelb/pvelb/provider/pve"
)

// NICFacts is what Proxmox knows of the addresses on one VM NIC. It is read
// only when pvelb seeds an ipfilter set (creates one, or adds a changed own
// address to one it created), which is rare, so the reads cost nothing in
// the steady state.
type NICFacts struct {
	// IPConfig are the static addresses of the NIC's cloud-init ipconfigN:
	// what Proxmox's nftables firewall admits on the NIC while no set exists.
	IPConfig []netip.Addr
	// Agent are the addresses the guest agent reports on the interface with
	// the NIC's MAC; AgentKnows says it answered and reported that interface.
	Agent      []netip.Addr
	AgentKnows bool
}

// SeedAddrs are the VM's own addresses a pvelb-made ipfilter set of one NIC
// admits: the NIC's cloud-init addresses (a set replaces the nftables
// firewall's default, which admits them; without them a static ip6 would
// be cut off), and what the guest agent reports on that NIC. Only when the
// agent says nothing of the NIC are the Node's addresses taken, whichever
// NIC carries them: a seed too many admits an address on a NIC that does not
// use it, a seed too few cuts the VM off. Link-local addresses are admitted
// by Proxmox in any case and are left out.
func SeedAddrs(nodeAddrs []netip.Addr, f NICFacts) []netip.Addr {
	out := slices.Clone(f.IPConfig)
	if f.AgentKnows {
		out = append(out, f.Agent...)
	} else {
		out = append(out, nodeAddrs...)
	}
	out = slices.DeleteFunc(out, func(a netip.Addr) bool {
		return !a.IsValid() || a.IsLinkLocalUnicast() || a.IsLoopback() || a.IsMulticast() || a.IsUnspecified()
	})
	for i := range out {
		out[i] = out[i].Unmap()
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// readNICFacts reads what Proxmox knows of the addresses on nic ("net1") of
// vm. The VM config must be read (its cloud-init addresses decide what a new
// set may not leave out); the guest agent is optional.
func readNICFacts(ctx context.Context, c pve.Client, vm pve.VMRef, nic string) (NICFacts, error) {
	var f NICFacts
	idx, err := strconv.Atoi(strings.TrimPrefix(nic, "net"))
	if err != nil {
		return f, fmt.Errorf("NIC %q: not netN", nic)
	}
	cfg, err := c.VMConfig(ctx, vm)
	if err != nil {
		return f, err
	}
	if raw, ok := cfg.IPConfigs[idx]; ok {
		if f.IPConfig, err = pve.ParseIPConfig(raw); err != nil {
			return f, fmt.Errorf("VM %d %w", vm.VMID, err)
		}
	}
	raw, ok := cfg.Nets[idx]
	if !ok {
		return f, nil
	}
	nc, err := pve.ParseNet(raw)
	if err != nil || nc.MAC == "" {
		return f, nil
	}
	ifs, err := c.AgentInterfaces(ctx, vm)
	if err != nil {
		return f, nil // no agent, or not running: the Node's addresses stand in
	}
	for _, in := range ifs {
		hw, err := net.ParseMAC(in.MAC)
		if err != nil || hw.String() != nc.MAC {
			continue
		}
		f.AgentKnows = true
		for _, p := range in.Prefixes {
			f.Agent = append(f.Agent, p.Addr())
		}
	}
	return f, nil
}

// seedsNeeded: the plan adds seeds, or refuses to create a set for want of
// known own addresses; then the NIC's own facts are worth reading.
func seedsNeeded(p Plan) bool {
	if p.State == SetRefused {
		return true
	}
	return slices.ContainsFunc(p.Actions, func(a Action) bool { return a.Seed })
}
