package lab

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/test/datapath"
	"github.com/pvelb/pvelb/test/netlab"
)

// answering sends one HTTP request to the VIP from the client and reads
// which MAC the client's kernel resolved it to.
func (l *Lab) answering(ctx context.Context) (*vm, netlab.Neighbor, error) {
	c := l.net.Client
	if _, err := datapath.Get(ctx, c, l.vipURL(), 2*time.Second); err != nil {
		return nil, netlab.Neighbor{}, err
	}
	nb, err := c.Neigh(ctx, l.vip)
	if err != nil {
		return nil, nb, err
	}
	if nb.MAC == nil {
		return nil, nb, fmt.Errorf("client has no neighbour entry for %s (state %q)", l.vip, nb.State)
	}
	v := l.nodeByMAC(nb.MAC)
	if v == nil {
		return nil, nb, fmt.Errorf("%s resolved to %s, which is no node's MAC", l.vip, nb.MAC)
	}
	return v, nb, nil
}

// reachVIP shows the client's HTTP requests answered by the pods through
// the VIP, its pings, and which node answers ARP for the VIP.
func (l *Lab) reachVIP(ctx context.Context) error {
	c := l.net.Client
	var out string
	t0 := time.Now()
	if err := poll(ctx, 30*time.Second, "client's curl "+l.vipURL(), func(ctx context.Context) error {
		var err error
		out, err = l.curl(ctx, time.Second)
		return err
	}); err != nil {
		return err
	}
	l.p.say("client$ curl %s   (answered %s after the IPSets showed the VIP)", l.vipURL(), since(t0))
	l.p.say("%s", out)
	// Fresh connections, so kube-proxy picks a backend for each.
	first, err := datapath.ParseAnswer(out)
	if err != nil {
		return err
	}
	seen := map[string]bool{first.Pod: true}
	for i := 0; i < 20 && len(seen) < len(podNames); i++ {
		if out, err := l.curl(ctx, time.Second); err == nil {
			if a, err := datapath.ParseAnswer(out); err == nil && !seen[a.Pod] {
				seen[a.Pod] = true
				l.p.say("client$ curl %s", l.vipURL())
				l.p.say("%s", out)
			}
		}
	}
	l.p.say("kube-proxy spreads new connections over the pods; from= is the node that masqueraded the client (externalTrafficPolicy Cluster)")
	if out, err := c.Run(ctx, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", l.vip.String()); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			l.p.say("client$ %s", line)
		}
	} else {
		l.p.say("client$ ping -c 3 %s -> no reply: kube-proxy in iptables mode forwards only the Service's ports", l.vip)
		l.p.say("(IPVS mode binds the VIP to kube-ipvs0, so the node would answer ping; it needs ip_vs, which this kernel lacks)")
	}
	v, nb, err := l.answering(ctx)
	if err != nil {
		return err
	}
	l.p.say("client$ ip neigh show %s -> %s %s", l.vip, nb.MAC, nb.State)
	l.p.say("%s answered: MAC %s is %s, Proxmox VM %d on %s", l.vip, nb.MAC, v.host.Name, v.vmid, v.pveHost)
	ev, err := l.announcingEvent(ctx, v.host.Name, time.Time{})
	if err != nil {
		return err
	}
	l.p.say("kubectl describe service %s: Normal  Announcing  %s", serviceName, ev)
	return l.sayAnnouncement(ctx, v.host.Name)
}

// sayAnnouncement waits for the ServiceAnnouncement naming node as the one
// answering for the VIP and prints it as `kubectl get svcann` shows it.
func (l *Lab) sayAnnouncement(ctx context.Context, node string) error {
	var st v1alpha1.ServiceAnnouncementStatus
	err := poll(ctx, 20*time.Second, "ServiceAnnouncement naming "+node, func(ctx context.Context) error {
		list, err := l.dyn.Resource(names.ServiceAnnouncements).Namespace("default").List(ctx, metav1.ListOptions{
			LabelSelector: names.LabelAnnouncedService + "=" + serviceName,
		})
		if err != nil {
			return err
		}
		for _, u := range list.Items {
			var a v1alpha1.ServiceAnnouncement
			if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &a) != nil {
				continue
			}
			if a.Status.Node == node && slices.Contains(a.Status.IPs, l.vip.String()) {
				st = a.Status
				return nil
			}
		}
		return fmt.Errorf("%d announcements, none from %s for %s", len(list.Items), node, l.vip)
	})
	if err != nil {
		return err
	}
	l.p.say("kubectl get svcann -l %s=%s: %s.%s  IPs %v  %s  node %s  Proxmox host %s  VM %s",
		names.LabelAnnouncedService, serviceName, serviceName, st.Node, st.IPs, st.Mode, st.Node, st.ProxmoxHost, st.VMID)
	return nil
}

// announcingEvent waits for the announcer's Event on the Service that names
// node as the one answering for the VIP (newer than after, when set).
func (l *Lab) announcingEvent(ctx context.Context, node string, after time.Time) (string, error) {
	var msg string
	err := poll(ctx, 20*time.Second, "Announcing event for "+node, func(ctx context.Context) error {
		evs, err := l.kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + serviceName})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			last := e.LastTimestamp.Time
			if last.IsZero() {
				last = e.EventTime.Time
			}
			if e.Reason == "Announcing" && strings.Contains(e.Message, "Node "+node+" ") &&
				strings.Contains(e.Message, l.vip.String()) && !last.Before(after.Truncate(time.Second)) {
				msg = e.Message
				return nil
			}
		}
		return fmt.Errorf("%d events, none from %s", len(evs.Items), node)
	})
	return msg, err
}
