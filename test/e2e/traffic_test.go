package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pvelb/pvelb/test/datapath"
	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvefw"
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
		before, err := l.fw.Counters()
		if err != nil {
			t.Fatal(err)
		}
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
		// Drops during the edits, per VM, for the report: the winner's
		// include the VIP's own frames until its admission bit.
		after, err := l.fw.Counters()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range l.net.Nodes {
			vm := l.vmid[n.Name]
			t.Logf("VM %d (%s): %d frames dropped while pvelb edited", vm, n.Name, after[vm]-before[vm])
		}
		if _, err := l.get(context.Background(), url, 2*time.Second); err != nil {
			t.Errorf("GET %s after the edits: %v", url, err)
		}
	})
}

// TestTrafficServices: what a user's Services do through the VIP. Pods run
// on node1 (two) and node2 (one), none on node3, so Local has a node it
// must never land on.
func TestTrafficServices(t *testing.T) {
	l := newTrafficLab(t, trafficOpts{Pods: []int{2, 1, 0}})
	ctx := context.Background()
	client := l.net.Client.IPv4.Addr().String()

	t.Run("Cluster is answered by pods on several nodes", func(t *testing.T) {
		l.service(t, "cluster")
		url := tlURL(l.vips(t, "cluster", 1)[0], 80)
		l.waitHTTP(t, url, 30*time.Second)
		pods, nodes := map[string]bool{}, map[string]bool{}
		for range 40 {
			a, err := l.get(ctx, url, 2*time.Second)
			if err != nil {
				t.Fatalf("GET %s: %v", url, err)
			}
			pods[a.Pod], nodes[a.Node] = true, true
		}
		t.Logf("40 requests answered by %v on %v", keys(pods), keys(nodes))
		if len(nodes) < 2 || len(pods) < 3 {
			t.Errorf("answers from pods %v on nodes %v, want all three pods on node1 and node2", keys(pods), keys(nodes))
		}
	})

	t.Run("two Services share one VIP on different ports", func(t *testing.T) {
		const key = "pvelb.io/sharing-key"
		l.service(t, "share-a", tlAnnotate(key, "web"), tlPort(8081))
		va := l.vips(t, "share-a", 1)[0]
		l.service(t, "share-b", tlAnnotate(key, "web"), tlPort(8082))
		vb := l.vips(t, "share-b", 1)[0]
		if va != vb {
			t.Fatalf("share-a got %s, share-b %s: not shared", va, vb)
		}
		for _, port := range []int{8081, 8082} {
			a := l.waitHTTP(t, tlURL(va, port), 30*time.Second)
			t.Logf("%s port %d answered by %s", va, port, a.Pod)
		}
	})

	t.Run("Local is answered by the announcing node's pod, and follows it", func(t *testing.T) {
		l.service(t, "local", tlLocal)
		vip := l.vips(t, "local", 1)[0]
		url := tlURL(vip, 80)
		owner := l.owner(t, vip, 30*time.Second)
		if owner.Name == "node3" {
			t.Fatalf("%s announced by node3, which has no local pod", vip)
		}
		l.waitHTTP(t, url, 30*time.Second)
		for range 10 {
			a, err := l.get(ctx, url, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if a.Node != owner.Name || a.From != client {
				t.Fatalf("answered %+v, want a pod on %s seeing the client %s", a, owner.Name, client)
			}
		}
		h := l.hammer(url, 20*time.Millisecond)
		time.Sleep(time.Second)
		killed := time.Since(h.start)
		if err := syscall.Kill(-l.ann[owner.Name].cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var next *netlab.Host
		Eventually(t, 10*time.Second, "another node answers for "+vip.String(), func(ctx context.Context) error {
			macs, err := l.net.Client.Arping(ctx, vip, 1, 50*time.Millisecond)
			if err != nil {
				return err
			}
			if len(macs) != 1 || macs[0].String() == owner.MAC.String() {
				return errorf("answers %v", macs)
			}
			next = (&annLab{net: l.net}).nodeByMACHost(macs[0])
			return nil
		})
		moved := time.Since(h.start)
		time.Sleep(3 * time.Second)
		ok, failures, byNode := h.stop()
		t.Logf("SIGKILL of %s's announcer at +%s, %s answers at +%s; %d requests answered %v, %d failed",
			owner.Name, killed.Round(time.Millisecond), next.Name, moved.Round(time.Millisecond), ok, byNode, len(failures))
		if next.Name == "node3" {
			t.Errorf("%s moved to node3, which has no local pod", vip)
		}
		if len(failures) > 0 {
			t.Errorf("%d of %d requests failed through the move:\n%s", len(failures), ok+len(failures), strings.Join(failures, "\n"))
		}
		for range 10 {
			a, err := l.get(ctx, url, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if a.Node != next.Name || a.From != client {
				t.Fatalf("after the move answered %+v, want a pod on %s seeing %s", a, next.Name, client)
			}
		}
		l.startAnnouncer(owner)
	})
}

// TestTrafficModes: both kube-proxy modes and both Proxmox firewall
// implementations carry a dual-stack Service's traffic once pvelb admitted
// its VIPs (IPv4 over ARP, IPv6 over NDP), in every pairing of the two
// but one: each mode and each variant appears twice.
func TestTrafficModes(t *testing.T) {
	for _, c := range []struct {
		proxy   datapath.ProxyMode
		variant pvefw.Variant
	}{
		{datapath.IPTables, pvefw.Classic},
		{datapath.NFTables, pvefw.Nftables},
		{datapath.NFTables, pvefw.Classic},
	} {
		t.Run(string(c.proxy)+"/"+c.variant.String(), func(t *testing.T) {
			l := newTrafficLab(t, trafficOpts{Proxy: c.proxy, Variant: c.variant})
			l.service(t, "dual", tlDualStack)
			vips := l.vips(t, "dual", 2)
			for _, vip := range vips {
				url := tlURL(vip, 80)
				a := l.waitHTTP(t, url, 30*time.Second)
				nodes := map[string]bool{a.Node: true}
				for range 20 {
					a, err := l.get(context.Background(), url, 2*time.Second)
					if err != nil {
						t.Fatalf("GET %s: %v", url, err)
					}
					nodes[a.Node] = true
				}
				t.Logf("%s answered by pods on %v", url, keys(nodes))
				if len(nodes) < 2 {
					t.Errorf("%s: answers only from %v under Cluster", url, keys(nodes))
				}
			}
		})
	}
}

// TestTrafficTransitions: the announcer transitions of
// transitions_test.go, with real requests through the VIP: new connections
// every 20 ms and one keep-alive connection carrying a request every
// 100 ms, while the bridge monitor checks the one-answerer rule. Where the
// VIP stays (restarts in place, a non-owner's partition) no request may fail
// and the established connection must survive. kube-proxy's
// conntrack (DNAT and, under Cluster, SNAT) lives on the node that took the
// flow's first packet, so a move of the VIP sends the rest of an
// established flow to a node that knows nothing of it: when that breaks the
// connection, the failure says exactly when and how.
func TestTrafficTransitions(t *testing.T) {
	l := newTrafficLab(t, trafficOpts{})
	l.service(t, "web")
	vip := l.vips(t, "web", 1)[0]
	url := tlURL(vip, 80)
	l.waitHTTP(t, url, 30*time.Second)
	al := &annLab{net: l.net}
	for _, n := range l.net.Nodes {
		al.waitQuorum(t, n, 15*time.Second)
	}

	// observe runs change under the requests and the monitor and checks
	// everything; marks are the change's steps, for the report.
	//
	// maxMoves bounds how often the VIP may change hands on the wire;
	// where it may not move at all, no request may fail and the keep-alive
	// connection must be the one it dialled first.
	observe := func(t *testing.T, maxMoves int, change func(mark func(string))) {
		w := al.watch(t, 0, vip)
		stalls := watchStalls(l.ann)
		h := l.hammer(url, 20*time.Millisecond)
		k := l.keepAlive(url, 100*time.Millisecond)
		var marks []string
		mark := func(s string) {
			marks = append(marks, fmt.Sprintf("+%s %s", time.Since(h.start).Round(time.Millisecond), s))
		}
		time.Sleep(time.Second)
		change(mark)
		time.Sleep(2 * time.Second)
		ok, failures, byNode := h.stop()
		kok, kerrs, dials, ends, pods := k.stop()
		w.finish(t)
		t.Logf("steps:\n%s", strings.Join(marks, "\n"))
		t.Logf("new connections: %d answered %v, %d failed; keep-alive: %d answered by %v, %d failed, dials %v; %s answered by %v",
			ok, byNode, len(failures), kok, pods, len(kerrs), dials, vip, w.answeredBy(vip, time.Time{}, time.Time{}))
		// One answerer on the wire (finish). A new connection fails only
		// when its handshake went to the old owner and its next packets to
		// the new one, so at most one per move; a move resets established
		// flows (kube-proxy's conntrack lives on the node that took the
		// first packet), so where the VIP must stay, nothing may fail.
		moves := ownerChanges(w.mon.Events(), vip)
		t.Logf("the VIP moved %d times; the keep-alive connection: %d requests failed, dials %v, connections ended %v",
			moves, len(kerrs), dials, ends)
		stalls.add(l.ann)
		if n := stalls.count(); n > 0 && moves > maxMoves {
			t.Logf("%d stall reports from the announcers (the host froze them): a stalled owner steps down, so the moves are not checked", n)
			return
		}
		if moves > maxMoves {
			t.Errorf("%s changed hands %d times, want at most %d\n%s", vip, moves, maxMoves, w.mon.Timeline(vip))
		}
		if len(failures) > moves {
			t.Errorf("%d of %d requests on new connections failed over %d moves of %s, want at most one per move:\n%s",
				len(failures), ok+len(failures), moves, vip, strings.Join(failures, "\n"))
		}
		if maxMoves == 0 && (len(kerrs) > 0 || len(dials) != 1) {
			t.Errorf("the keep-alive connection broke although %s stayed: %d requests failed %v, dials %v, connections ended %v",
				vip, len(kerrs), kerrs, dials, ends)
		}
	}

	// Every announcer restarts in place (its node stays): the VIP never
	// moves, so no request fails and the established connection survives.
	t.Run("rolling restart of every announcer", func(t *testing.T) {
		observe(t, 0, func(mark func(string)) {
			for _, n := range l.net.Nodes {
				owner := l.owner(t, vip, 5*time.Second)
				mark(vip.String() + " owned by " + owner.Name + "; SIGTERM " + n.Name)
				p := l.ann[n.Name]
				if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				select {
				case <-p.done:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s did not stop on SIGTERM", n.Name)
				}
				mark(n.Name + " stopped; starting it")
				l.startAnnouncer(n)
				al.waitQuorum(t, n, 15*time.Second)
				mark(n.Name + " has quorum")
				time.Sleep(500 * time.Millisecond)
			}
			mark(vip.String() + " owned by " + l.owner(t, vip, 5*time.Second).Name)
		})
	})

	// A node that does not own the VIP loses its membership traffic both
	// ways and gets it back: it steps down and rejoins, the VIP stays.
	t.Run("two-way partition of a non-owner and its heal", func(t *testing.T) {
		owner := l.owner(t, vip, 5*time.Second)
		var other *netlab.Host
		for _, n := range l.net.Nodes {
			if n.Name != owner.Name {
				other = n
				break
			}
		}
		observe(t, 0, func(mark func(string)) {
			if err := other.DropUDP(tlMemberUDP, netlab.Both); err != nil {
				t.Fatal(err)
			}
			mark("membership of " + other.Name + " dropped both ways")
			time.Sleep(2 * time.Second)
			if err := other.Heal(); err != nil {
				t.Fatal(err)
			}
			mark(other.Name + " healed")
			al.waitQuorum(t, other, 10*time.Second)
			mark(other.Name + " has quorum; " + vip.String() + " owned by " + l.owner(t, vip, 5*time.Second).Name)
		})
	})

	t.Run("one-way partition of the owner (membership inbound)", func(t *testing.T) {
		owner := l.owner(t, vip, 5*time.Second)
		// The owner steps down and the VIP moves (that resets what was
		// established through it); once healed it may come back.
		observe(t, 2, func(mark func(string)) {
			if err := owner.DropUDP(tlMemberUDP, netlab.In); err != nil {
				t.Fatal(err)
			}
			mark("membership in to " + owner.Name + " dropped")
			time.Sleep(4 * time.Second)
			mark(vip.String() + " owned by " + l.owner(t, vip, 5*time.Second).Name)
			if err := owner.Heal(); err != nil {
				t.Fatal(err)
			}
			mark(owner.Name + " healed")
			time.Sleep(3 * time.Second)
			mark(vip.String() + " owned by " + l.owner(t, vip, 5*time.Second).Name)
		})
	})
}

// ownerChanges counts how often the MAC answering vip changed on the wire.
func ownerChanges(ev netlab.Events, vip netip.Addr) int {
	var last string
	n := 0
	for _, e := range ev {
		if a, ok := e.Answer(); !ok || a != vip {
			continue
		}
		if m := e.MAC.String(); m != last {
			if last != "" {
				n++
			}
			last = m
		}
	}
	return n
}
