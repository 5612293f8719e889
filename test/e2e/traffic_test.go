package e2e

import (
	"context"
	"testing"
	"time"
)

// TestTrafficFirewall is pvelb's central claim, with real traffic: on
// Proxmox with the IP filter on, a LoadBalancer VIP nobody admitted is
// unreachable (the elected node's ARP replies and packets from the VIP are
// dropped at its VM's port, and pvefw counts them), and once pvelb manages
// the firewall the same VIP answers HTTP from a pod. While pvelb edits the
// IPSets, the nodes' own traffic is never dropped.
func TestTrafficFirewall(t *testing.T) {
	l := newTrafficLab(t, trafficOpts{FirewallOff: true})
	l.service(t, "web")
	vip := l.vips(t, "web", 1)[0]
	url := tlURL(vip, 80)
	winner := l.announcing(t, 1, 30*time.Second)
	vm := l.vmid[winner.Name]
	t.Logf("firewall off: %s elected for %s (VM %d)", winner.Name, vip, vm)

	t.Run("off: the VIP is unreachable and the winner's VM drops", func(t *testing.T) {
		before, err := l.fw.Drops(vm)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		// Ten tries over more than the client's ARP resolution time: none
		// may be answered.
		for i := range 5 {
			if a, err := l.get(ctx, url, 2*time.Second); err == nil {
				t.Fatalf("try %d: answered by %+v with pvelb's firewall feature off", i, a)
			} else if i == 0 {
				t.Logf("GET %s: %v", url, err)
			}
		}
		after, err := l.fw.Drops(vm)
		if err != nil {
			t.Fatal(err)
		}
		if after <= before {
			t.Errorf("VM %d (%s): drops %d -> %d, want more", vm, winner.Name, before, after)
		}
		t.Logf("VM %d dropped %d frames during the tries", vm, after-before)
	})
	if t.Failed() {
		return
	}

	t.Run("on: HTTP through the VIP, node traffic never dropped", func(t *testing.T) {
		const observe = 25 * time.Second
		pings := l.nodeTraffic(observe)
		t0 := time.Now()
		l.restartCCM(t, false)
		a := l.waitHTTP(t, url, 20*time.Second)
		t.Logf("answered by %s on %s %s after pvelb-ccm restarted with the firewall on", a.Pod, a.Node, time.Since(t0).Round(10*time.Millisecond))
		// More edits while the pings run: a second VIP admitted, then
		// released.
		l.service(t, "web2", tlPort(8081))
		vip2 := l.vips(t, "web2", 1)[0]
		l.waitHTTP(t, tlURL(vip2, 8081), 20*time.Second)
		if err := l.kube.CoreV1().Services("default").Delete(context.Background(), "web2", metaDelete()); err != nil {
			t.Fatal(err)
		}
		if time.Since(t0) > observe-2*time.Second {
			t.Errorf("the edits took %s, longer than the pings", time.Since(t0))
		}
		checkNodeTraffic(t, pings)
		if _, err := l.get(context.Background(), url, 2*time.Second); err != nil {
			t.Errorf("GET %s after the edits: %v", url, err)
		}
	})
}
