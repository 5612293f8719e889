package lab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"
)

// fwResync is pvelb-ccm's firewall.resyncPeriod in the lab: how soon it
// repairs an IPSet entry someone removed. The default is 60 s; the demo
// waits for one repair, so it uses less.
const fwResync = 10 * time.Second

// withheld shows what pvelb's IPSet entries are for. The VIP's entry is
// deleted from the announcing VM's ipfilter-net0 through the Proxmox API, as
// a user tidying the set by hand would; the emulated firewall then drops
// that VM's ARP replies for the VIP, so the client cannot reach it. pvelb
// notices the drift at its next resync and writes the entry back, and the
// client's next request is answered.
func (l *Lab) withheld(ctx context.Context) error {
	v, _, err := l.answering(ctx)
	if err != nil {
		return err
	}
	before, err := l.fw.Drops(v.vmid)
	if err != nil {
		return err
	}
	path := fmt.Sprintf("/api2/json/nodes/%s/qemu/%d/firewall/ipset/%s/%s", v.pveHost, v.vmid, vmIPSet, url.PathEscape(l.vip.String()))
	if err := l.pveDelete(path); err != nil {
		return err
	}
	deleted := time.Now()
	l.p.say("user$ pvesh delete %s", path[len("/api2/json"):])
	l.p.say("%s (VM %d) answers ARP for %s, but its ipfilter-net0 no longer admits it", v.host.Name, v.vmid, l.vip)
	// The emulated firewall applies the deletion at once rather than at its
	// next pass, so the drop is shown even when pvelb's resync is close.
	if err := l.fw.ApplyNow(); err != nil {
		return err
	}
	// As when its neighbour entry has expired: the client must ask again.
	if err := l.net.Client.FlushNeigh(ctx); err != nil {
		return err
	}
	var cerr error
	var drops uint64
	if err := poll(ctx, 5*time.Second, "drops counted for VM "+fmt.Sprint(v.vmid), func(ctx context.Context) error {
		if _, cerr = l.curl(ctx, time.Second); cerr == nil {
			return &fatal{errors.New("the client reached the VIP while its entry was missing")}
		}
		if drops, err = l.fw.Drops(v.vmid); err != nil {
			return err
		}
		if drops <= before {
			return errors.New("no drop counted yet")
		}
		return nil
	}); err != nil {
		if hasCIDR(l.sim.IPSetEntries(vmScope(v), vmIPSet), l.vip.String()) {
			l.p.say("(pvelb repaired the entry before the client asked: no drop to show)")
			return nil
		}
		return err
	}
	l.p.say("client$ curl --max-time 1 %s -> %v", l.vipURL(), cerr)
	nb, _ := l.net.Client.Neigh(ctx, l.vip)
	l.p.say("client$ ip neigh show %s -> %s (no ARP reply reached the client)", l.vip, orNone(nb.State))
	l.p.say("Proxmox firewall drop counter of VM %d: +%d frame(s) since the deletion: %s's ARP replies for %s", v.vmid, drops-before, v.host.Name, l.vip)

	l.p.say("waiting for pvelb-ccm's drift repair (firewall.resyncPeriod %s here, default 60s)...", fwResync)
	var readmitted time.Duration
	if err := poll(ctx, fwResync+10*time.Second, "pvelb re-admits "+l.vip.String(), func(ctx context.Context) error {
		if readmitted == 0 && hasCIDR(l.sim.IPSetEntries(vmScope(v), vmIPSet), l.vip.String()) {
			readmitted = time.Since(deleted)
		}
		if readmitted == 0 {
			if drops, err = l.fw.Drops(v.vmid); err != nil {
				return err
			}
			return errors.New("entry still missing")
		}
		return nil
	}); err != nil {
		return err
	}
	l.p.say("pvelb-ccm wrote %s back into VM %d's ipfilter-net0 %s after the deletion (%d frame(s) dropped meanwhile)",
		l.vip, v.vmid, readmitted.Round(100*time.Millisecond), drops-before)
	var out string
	if err := poll(ctx, fwPeriod+10*time.Second, "the client reaches "+l.vip.String()+" again", func(ctx context.Context) error {
		out, err = l.curl(ctx, time.Second)
		return err
	}); err != nil {
		return err
	}
	l.p.say("the emulated firewall applied it; client$ curl %s   (%s after the deletion)", l.vipURL(), since(deleted))
	l.p.say("%s", out)
	return nil
}

// pveDelete sends a DELETE to the Proxmox API as the lab's token holder.
func (l *Lab) pveDelete(path string) error {
	req := httptest.NewRequest(http.MethodDelete, path, nil)
	req.Header.Set("Authorization", "PVEAPIToken="+tokenID+"="+l.secret)
	rec := httptest.NewRecorder()
	l.sim.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("DELETE %s: %d %s", path, rec.Code, rec.Body.String())
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "no entry"
	}
	return s
}
