package lab

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pvelb/pvelb/test/netlab"
)

// failover pulls the answering node's cable while the client pings and
// sends an HTTP request every 10 ms, and reports the outage as the client
// measured it. With kube-proxy in iptables mode nothing answers ping for a
// VIP (only the Service's ports are forwarded), so the HTTP requests are
// the measure; the pings are reported only when the VIP answers them.
func (l *Lab) failover(ctx context.Context) error {
	old, _, err := l.answering(ctx)
	if err != nil {
		return err
	}
	conn, err := l.net.Client.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("opening an ICMP socket in the client namespace: %w", err)
	}
	defer conn.Close()
	pg := newPinger(conn, l.vip)
	pctx, stopPing := context.WithCancel(ctx)
	defer stopPing()
	type result struct {
		rec pingRecord
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		rec, err := pg.run(pctx, 10*time.Millisecond)
		done <- result{rec, err}
	}()
	hp := newHTTPProber(l.net.Client, l.vipURL())
	httpDone := make(chan pingRecord, 1)
	go func() { httpDone <- hp.run(pctx, 10*time.Millisecond) }()
	if err := poll(ctx, 5*time.Second, "HTTP answered before the fault", func(context.Context) error {
		if !hp.answeredAfter(start) {
			return errors.New("no answer yet")
		}
		return nil
	}); err != nil {
		stopPing()
		<-done
		<-httpDone
		return err
	}
	pingable := pg.receivedAfter(start)
	time.Sleep(300 * time.Millisecond)
	l.p.say("%s answers for %s; pulling its cable (its bridge port leaves vmbr0)", old.host.Name, l.vip)
	if err := old.host.CutLink(); err != nil {
		stopPing()
		<-done
		return err
	}
	// The fault counts from when the cable is out, not from when the
	// command to pull it started: pings sent while `ip` was still running
	// reached the old owner, and their replies would pass for a failover.
	fault := time.Now()
	restored := false
	restore := func() {
		if !restored {
			restored = true
			_ = old.host.RestoreLink()
		}
	}
	defer restore()
	werr := poll(ctx, 15*time.Second, "the VIP answers again", func(context.Context) error {
		if !hp.answeredAfter(fault) || (pingable && !pg.receivedAfter(fault)) {
			return errors.New("no answer since the cut")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	stopPing()
	r := <-done
	hrec := <-httpDone
	if werr != nil {
		return fmt.Errorf("%w (the client sent %d HTTP requests)", werr, len(hrec.Sent))
	}
	if r.err != nil {
		return r.err
	}
	ho, err := analyzeOutage(hrec, fault)
	if err != nil {
		return err
	}
	var nb netlab.Neighbor
	var now *vm
	if err := poll(ctx, 5*time.Second, "the client's neighbour entry moves", func(ctx context.Context) error {
		var err error
		if nb, err = l.net.Client.Neigh(ctx, l.vip); err != nil {
			return err
		}
		if now = l.nodeByMAC(nb.MAC); now == nil || now == old {
			return fmt.Errorf("after the cut the client resolves %s to %s, not to another node", l.vip, nb.MAC)
		}
		return nil
	}); err != nil {
		return err
	}
	l.p.say("%s took over: the client's neighbour entry for %s is now %s (%s, VM %d on %s)",
		now.host.Name, l.vip, nb.MAC, now.host.Name, now.vmid, now.pveHost)
	l.p.say("failover measured by HTTP: %s without an answer (%d of %d requests failed); first answer %s after the cut",
		ho.Gap.Round(time.Millisecond), ho.Lost, ho.Sent, ho.Recovered.Round(time.Millisecond))
	l.p.say("  (a request every 10 ms, each on a new connection, 1 s timeout; answers per pod: %s)", perPod(hp.pods()))
	if pingable {
		o, err := analyzeOutage(r.rec, fault)
		if err != nil {
			return err
		}
		l.p.say("failover measured by ping: %s without a reply (%d of %d pings lost); first reply %s after the cut",
			o.Gap.Round(time.Millisecond), o.Lost, o.Sent, o.Recovered.Round(time.Millisecond))
	} else {
		l.p.say("failover measured by ping: not measurable here, none of the %d pings was answered, before the cut either:", len(r.rec.Sent))
		l.p.say("  kube-proxy in iptables mode forwards only the Service's ports; IPVS mode, which binds the VIP, would answer ping")
	}
	if ev, err := l.announcingEvent(ctx, now.host.Name, fault); err == nil {
		l.p.say("kubectl describe service %s: Normal  Announcing  %s", serviceName, ev)
		if err := l.sayAnnouncement(ctx, now.host.Name); err != nil {
			l.p.say("(no ServiceAnnouncement from %s yet: %v)", now.host.Name, err)
		}
	} else {
		l.p.say("(no Announcing event from %s yet: %v)", now.host.Name, err)
	}
	restore()
	l.p.say("%s's cable is back; the announcers agree again on one node per VIP", old.host.Name)
	return nil
}

// perPod formats answer counts per pod, sorted by name.
func perPod(m map[string]int) string {
	var out []string
	for pod, n := range m {
		out = append(out, fmt.Sprintf("%s %d", pod, n))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
