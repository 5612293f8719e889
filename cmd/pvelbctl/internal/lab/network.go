package lab

import (
	"context"
	"fmt"
	"net"

	"github.com/pvelb/pvelb/test/netlab"
)

// startNetwork builds the namespaces and bridge and assigns each node a
// Proxmox VM (ID, host, UUID) for the simulator.
func (l *Lab) startNetwork(context.Context) error {
	n, err := netlab.Build(netlab.Options{Nodes: l.opts.Nodes}, func(f string, a ...any) {
		l.p.say(f, a...)
	})
	if err != nil {
		return err
	}
	l.net = n
	l.onTeardown(n.Close)
	if l.ctl, err = n.Add("ctl", ctlOctet); err != nil {
		return err
	}
	for i, h := range n.Nodes {
		pveHost := "pve1"
		// Two thirds of the VMs on pve1, the rest on pve2: with 3 nodes,
		// pve1 runs two VMs and pve2 one.
		if i >= l.opts.Nodes-l.opts.Nodes/3 {
			pveHost = "pve2"
		}
		l.vms = append(l.vms, &vm{host: h, vmid: 101 + i, pveHost: pveHost,
			uuid: fmt.Sprintf("6b7d1f4e-0c1a-4a53-9b0e-%012d", 101+i)})
	}
	tw := l.table()
	tw.row("NAMESPACE\tROLE\tADDRESS\tMAC")
	tw.row("%s\tcontrol plane + Proxmox API\t%s\t%s", l.ctl.Netns, l.ctl.IPv4.Addr(), l.ctl.MAC)
	for _, v := range l.vms {
		tw.row("%s\t%s (VM %d on %s)\t%s\t%s", v.host.Netns, v.host.Name, v.vmid, v.pveHost, v.host.IPv4.Addr(), v.host.MAC)
	}
	tw.row("%s\tclient\t%s\t%s", n.Client.Netns, n.Client.IPv4.Addr(), n.Client.MAC)
	tw.print()
	return nil
}

// nodeByMAC names the lab node that owns mac.
func (l *Lab) nodeByMAC(mac net.HardwareAddr) *vm {
	for _, v := range l.vms {
		if v.host.MAC.String() == mac.String() {
			return v
		}
	}
	return nil
}
