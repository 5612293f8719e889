package lab

import (
	"context"
	"fmt"
	"time"

	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/provider/pve"
)

// ipsetView is one IPSet as the lab shows it.
type ipsetView struct {
	title   string
	entries []pve.IPSetEntry
}

// showIPSets waits until the VIP is in the cluster IPSet and every VM's
// ipfilter-net0, and shows whose each entry is.
func (l *Lab) showIPSets(ctx context.Context) error {
	cidr := l.vip.String()
	var sets []ipsetView
	if err := poll(ctx, 60*time.Second, "VIP "+cidr+" in the Proxmox IPSets", func(context.Context) error {
		sets = sets[:0]
		cl := l.sim.IPSetEntries(pve.ClusterScope, clusterIPSet)
		if !hasCIDR(cl, cidr) {
			return fmt.Errorf("cluster IPSet %s lacks %s", clusterIPSet, cidr)
		}
		sets = append(sets, ipsetView{"cluster firewall, IPSet " + clusterIPSet + " (for your firewall rules)", cl})
		for _, v := range l.vms {
			es := l.sim.IPSetEntries(vmScope(v), vmIPSet)
			if !hasCIDR(es, cidr) {
				return fmt.Errorf("VM %d's %s lacks %s", v.vmid, vmIPSet, cidr)
			}
			sets = append(sets, ipsetView{fmt.Sprintf("VM %d (%s on %s), IPSet %s", v.vmid, v.host.Name, v.pveHost, vmIPSet), es})
		}
		return nil
	}); err != nil {
		return err
	}
	l.p.say("entries marked [pvelb] were written by pvelb; [yours] were there before and are never touched")
	for _, s := range sets {
		l.p.say("%s:", s.title)
		tw := l.table()
		for _, e := range s.entries {
			who := "[yours]"
			if firewall.IsOurs(e.Comment) {
				who = "[pvelb]"
			}
			tw.row("  %s\t%s\t%s", who, e.CIDR, e.Comment)
		}
		tw.print()
	}
	l.p.say("without these entries Proxmox's IP filter would drop the nodes' ARP replies for %s", cidr)
	return nil
}

func hasCIDR(es []pve.IPSetEntry, cidr string) bool {
	for _, e := range es {
		if e.CIDR == cidr {
			return true
		}
	}
	return false
}
