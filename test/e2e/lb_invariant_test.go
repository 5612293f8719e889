package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/pvelb/pvelb/provider/pve"
)

// editWindow bounds how long two Services may show one address after a
// user's edit made it unshareable: the apiserver takes the edit before pvelb
// sees it, so a window cannot be ruled out, but pvelb must close it at once.
const editWindow = time.Second

func (l *Lab) patchService(t testing.TB, ns, name, patch string) {
	t.Helper()
	if _, err := l.Client.CoreV1().Services(ns).Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching Service %s/%s with %s: %v", ns, name, patch, err)
	}
}

func (l *Lab) patchPool(t testing.TB, name, patch string) {
	t.Helper()
	if _, err := dynamic.NewForConfigOrDie(l.CP.Config).Resource(ippoolGVR).Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching IPPool %s: %v", name, err)
	}
}

const holdFinalizer = "example.com/hold"

func withFinalizer(f string) svcOpt {
	return func(s *corev1.Service) { s.Finalizers = append(s.Finalizers, f) }
}

// dropFinalizer removes one finalizer, leaving the others.
func (l *Lab) dropFinalizer(t testing.TB, ns, name, f string) {
	t.Helper()
	Eventually(t, 10*time.Second, "finalizer "+f+" removed from "+ns+"/"+name, func(ctx context.Context) error {
		s, err := l.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Finalizers = slices.DeleteFunc(s.Finalizers, func(x string) bool { return x == f })
		_, err = l.Client.CoreV1().Services(ns).Update(ctx, s, metav1.UpdateOptions{})
		return err
	})
}

// ipsOf returns the Service's ingress IPs now (nil when it shows none).
func (l *Lab) ipsOf(t testing.TB, ns, name string) []string {
	t.Helper()
	s, err := l.Client.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

// waitNoIPs waits until the Service shows no address.
func (l *Lab) waitNoIPs(t testing.TB, ns, name string) {
	t.Helper()
	Eventually(t, 30*time.Second, ns+"/"+name+" shows no address", func(ctx context.Context) error {
		if ips := l.ipsOf(t, ns, name); len(ips) > 0 {
			return errorf("shows %v", ips)
		}
		return nil
	})
}

// waitHeldAsShown waits until pvelb holds exactly what the Services show
// (see heldAsShown).
func (l *Lab) waitHeldAsShown(t testing.TB) {
	t.Helper()
	Eventually(t, 30*time.Second, "pvelb holds what the Services show", func(ctx context.Context) error {
		list, err := l.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		return heldAsShown(list.Items, l.PVE.IPSetEntries(pve.ClusterScope, clusterSet))
	})
}

// noViolations fails the test on every violation the watch saw that lasted
// longer than grace (0: any).
func noViolations(t testing.TB, stop func() []Violation, grace time.Duration) {
	t.Helper()
	all := stop()
	for _, v := range all {
		t.Logf("invariant: %s", v)
	}
	for _, v := range longerThan(all, grace) {
		t.Errorf("address invariant broken: %s", v)
	}
}

// TestSharedEditThatCannotKeepTheAddress: share-a and share-b share an address;
// share-b is edited so that its ports clash and it cannot get another address
// (the pool is full, or it asks for an address outside every pool, or a full
// pool). The edit fails with an Event, share-b stops showing the address at
// once, pvelb holds nothing for it, and neither a restart nor a third Service
// brings two Services onto the address.
func TestSharedEditThatCannotKeepTheAddress(t *testing.T) {
	l := lbLab(t, "firewall:\n  resyncPeriod: 3s\n")
	l.createPool(t, "main", map[string]any{"addresses": []any{"203.0.113.1-203.0.113.2"}})
	l.createPool(t, "small", map[string]any{"addresses": []any{"203.0.113.9/32"}, "autoAssign": false})
	ccm, _ := l.startCCM(t)
	l.waitNodesInitialised(t)
	l.createService(t, "default", "share-a", withAnn("pvelb.io/sharing-key", "web"), withPort(80))
	shared := l.waitIPs(t, "default", "share-a", 1)[0]
	l.createService(t, "default", "share-b", withAnn("pvelb.io/sharing-key", "web"), withPort(443))
	if got := l.waitIPs(t, "default", "share-b", 1)[0]; got != shared {
		t.Fatalf("share-b got %s, want the shared %s", got, shared)
	}
	l.createService(t, "default", "filler")
	l.waitIPs(t, "default", "filler", 1)
	l.createService(t, "default", "small-user", withAnn("pvelb.io/pool", "small"))
	l.waitIPs(t, "default", "small-user", 1)
	l.waitHeldAsShown(t)

	// Sharing keys are per namespace: the same key elsewhere does not join.
	l.createNamespace(t, "other")
	l.createService(t, "other", "intruder", withAnn("pvelb.io/sharing-key", "web"), withPort(8080))
	l.waitEvent(t, "other", "intruder", "PoolExhausted")
	if ips := l.ipsOf(t, "other", "intruder"); len(ips) > 0 {
		t.Errorf("other/intruder joined key web of namespace default: %v", ips)
	}
	if err := l.Client.CoreV1().Services("other").Delete(context.Background(), "intruder", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	clash := `{"spec":{"ports":[{"name":"p","port":80,"targetPort":80,"protocol":"TCP"}]}}`
	back := `{"metadata":{"annotations":{"pvelb.io/ips":null,"pvelb.io/pool":null}},"spec":{"ports":[{"name":"p","port":443,"targetPort":443,"protocol":"TCP"}]}}`
	for _, c := range []struct {
		name, patch, reason string
	}{
		{"ports clash, pool full", clash, "PoolExhausted"},
		{"ports clash, address outside every pool", `{"metadata":{"annotations":{"pvelb.io/ips":"198.51.100.7"}},"spec":{"ports":[{"name":"p","port":80,"targetPort":80,"protocol":"TCP"}]}}`, "AddressOutsidePools"},
		{"ports clash, named pool full", `{"metadata":{"annotations":{"pvelb.io/pool":"small"}},"spec":{"ports":[{"name":"p","port":80,"targetPort":80,"protocol":"TCP"}]}}`, "PoolExhausted"},
	} {
		t.Log(c.name)
		watch := watchAddressInvariant(t, l.Client)
		l.patchService(t, "default", "share-b", c.patch)
		l.waitEvent(t, "default", "share-b", c.reason)
		l.waitNoIPs(t, "default", "share-b")
		l.waitHeldAsShown(t)

		// A restart holds nothing more for share-b, and a third Service
		// without a key does not get the shared address.
		ccm.Stop()
		ccm, _ = l.startCCM(t)
		l.createService(t, "default", "third")
		l.waitEvent(t, "default", "third", "PoolExhausted")
		Consistently(t, 2*time.Second, "nobody else on the shared address", func(context.Context) error {
			if ips := l.ipsOf(t, "default", "third"); len(ips) > 0 {
				return errorf("third got %v", ips)
			}
			if ips := l.ipsOf(t, "default", "share-b"); len(ips) > 0 {
				return errorf("share-b shows %v again", ips)
			}
			return nil
		})
		l.waitHeldAsShown(t)
		if err := l.Client.CoreV1().Services("default").Delete(context.Background(), "third", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// Edited back, share-b shares again.
		l.patchService(t, "default", "share-b", back)
		if got := l.waitIPs(t, "default", "share-b", 1)[0]; got != shared {
			t.Fatalf("share-b got %s back, want %s", got, shared)
		}
		l.waitHeldAsShown(t)
		noViolations(t, watch, editWindow)
	}
}

// TestRestartKeepsAddressOutsidePools: a Service that names its pool holds
// an address the pool no longer contains after it shrank; neither a restart
// nor a failover to the second replica moves it, and an edit of the pool
// annotation still does.
func TestRestartKeepsAddressOutsidePools(t *testing.T) {
	l := lbLab(t, "firewall:\n  resyncPeriod: 3s\n")
	l.createPool(t, "gamma", map[string]any{"addresses": []any{"192.0.2.128/28"}, "autoAssign": false})
	l.createPool(t, "delta", map[string]any{"addresses": []any{"192.0.2.160/28"}, "autoAssign": false})
	first, _ := l.startCCM(t)
	second, _ := l.startCCM(t)
	l.waitNodesInitialised(t)
	for i := range 4 {
		l.createService(t, "default", fmt.Sprintf("filler-%d", i), withAnn("pvelb.io/pool", "gamma"))
		l.waitIPs(t, "default", fmt.Sprintf("filler-%d", i), 1)
	}
	l.createService(t, "default", "kept", withAnn("pvelb.io/pool", "gamma"))
	ip := l.waitIPs(t, "default", "kept", 1)[0]
	if ip != "192.0.2.132" {
		t.Fatalf("kept got %s, want 192.0.2.132", ip)
	}
	for i := range 4 {
		if err := l.Client.CoreV1().Services("default").Delete(context.Background(), fmt.Sprintf("filler-%d", i), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The snapshot below must not hold a Service still terminating, which
	// would change it when it goes.
	Eventually(t, 30*time.Second, "the fillers are gone", func(ctx context.Context) error {
		for i := range 4 {
			if _, err := l.Client.CoreV1().Services("default").Get(ctx, fmt.Sprintf("filler-%d", i), metav1.GetOptions{}); err == nil {
				return errorf("filler-%d still there", i)
			}
		}
		return nil
	})
	watch := watchAddressInvariant(t, l.Client)
	l.patchPool(t, "gamma", `{"spec":{"addresses":["192.0.2.128/30"]}}`)
	l.waitEvent(t, "default", "kept", "AddressOutsidePools", ip)
	before := l.snapshot(t)

	stable := func(what string) {
		t.Helper()
		Consistently(t, 3*time.Second, what, func(context.Context) error {
			if now := l.snapshot(t); !maps.Equal(now, before) {
				return errorf("addresses changed:\nbefore %v\nafter  %v", before, now)
			}
			return nil
		})
	}
	// Failover: the leader stops, the standby takes over.
	first.Stop()
	time.Sleep(6 * time.Second) // lease 4 s: the standby has taken over
	stable("addresses after a failover")
	// Restart of the only replica.
	second.Stop()
	l.startCCM(t)
	time.Sleep(6 * time.Second)
	stable("addresses after a restart")
	l.waitHeldAsShown(t)

	// The user's edit of the pool annotation is honoured.
	l.patchService(t, "default", "kept", `{"metadata":{"annotations":{"pvelb.io/pool":"delta"}}}`)
	Eventually(t, 30*time.Second, "kept moved to delta", func(context.Context) error {
		if ips := l.ipsOf(t, "default", "kept"); len(ips) != 1 || ips[0] != "192.0.2.160" {
			return errorf("kept shows %v", ips)
		}
		return nil
	})
	l.waitHeldAsShown(t)
	noViolations(t, watch, 0)
}

// TestPortEditClosesSharingAtOnce: one of two Services sharing an address is
// edited so its ports clash. It moves to another address at once; when no
// address is free it shows none at once (rather than keep the shared one
// until a retry finds one), and gets one once an address frees up. Either
// way the two show one address only for the moment pvelb needs to see the
// edit. Both controllers: class-less and pvelb-class Services.
func TestPortEditClosesSharingAtOnce(t *testing.T) {
	l := lbLab(t, "firewall:\n  resyncPeriod: 3s\n")
	l.createPool(t, "main", map[string]any{"addresses": []any{"203.0.113.0/28"}})
	l.createPool(t, "tiny-s", map[string]any{"addresses": []any{"203.0.113.100-203.0.113.101"}, "autoAssign": false})
	l.createPool(t, "tiny-c", map[string]any{"addresses": []any{"203.0.113.110-203.0.113.111"}, "autoAssign": false})
	l.startCCM(t)
	l.waitNodesInitialised(t)
	clash := `{"spec":{"ports":[{"name":"p","port":80,"targetPort":80,"protocol":"TCP"}]}}`
	apart := `{"spec":{"ports":[{"name":"p","port":443,"targetPort":443,"protocol":"TCP"}]}}`
	for _, p := range []string{"s", "c"} {
		var opts []svcOpt
		if p == "c" {
			opts = append(opts, withClass(lbClass))
		}
		a, b := p+"a", p+"b"
		l.createService(t, "default", a, append(opts, withAnn("pvelb.io/sharing-key", a), withPort(80))...)
		shared := l.waitIPs(t, "default", a, 1)[0]
		l.createService(t, "default", b, append(opts, withAnn("pvelb.io/sharing-key", a), withPort(443))...)
		if got := l.waitIPs(t, "default", b, 1)[0]; got != shared {
			t.Fatalf("%s got %s, want the shared %s", b, got, shared)
		}
		watch := watchAddressInvariant(t, l.Client)
		for range 5 {
			l.patchService(t, "default", b, clash)
			Eventually(t, 30*time.Second, b+" moved", func(context.Context) error {
				if ips := l.ipsOf(t, "default", b); len(ips) != 1 || ips[0] == shared {
					return errorf("%s shows %v", b, ips)
				}
				return nil
			})
			l.patchService(t, "default", b, apart)
			time.Sleep(500 * time.Millisecond)
		}
		l.waitHeldAsShown(t)

		// The same with the pool full.
		pool := "tiny-" + p
		fa, fb, filler := "full-"+a, "full-"+b, "filler-"+p
		l.createService(t, "default", fa, append(opts, withAnn("pvelb.io/pool", pool), withAnn("pvelb.io/sharing-key", fa), withPort(80))...)
		fshared := l.waitIPs(t, "default", fa, 1)[0]
		l.createService(t, "default", fb, append(opts, withAnn("pvelb.io/pool", pool), withAnn("pvelb.io/sharing-key", fa), withPort(443))...)
		l.waitIPs(t, "default", fb, 1)
		l.createService(t, "default", filler, append(opts, withAnn("pvelb.io/pool", pool))...)
		l.waitIPs(t, "default", filler, 1)
		l.patchService(t, "default", fb, clash)
		l.waitEvent(t, "default", fb, "PoolExhausted")
		l.waitNoIPs(t, "default", fb)
		if err := l.Client.CoreV1().Services("default").Delete(context.Background(), filler, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 60*time.Second, fb+" gets the freed address", func(context.Context) error {
			if ips := l.ipsOf(t, "default", fb); len(ips) != 1 || ips[0] == fshared {
				return errorf("%s shows %v", fb, ips)
			}
			return nil
		})
		l.waitHeldAsShown(t)
		noViolations(t, watch, editWindow)
	}
}

// TestClassSwitchKeepsClassAllocation: class-less Services switched to
// ClusterIP and straight back to LoadBalancer with class pvelb.io/loadbalancer
// keep the class controller's allocation (the service controller must not
// release it), and a class Service deleted while another finalizer keeps it
// holds its address until its status no longer shows it, so neither a new
// Service nor a restart puts two Services on one address.
func TestClassSwitchKeepsClassAllocation(t *testing.T) {
	l := lbLab(t, "firewall:\n  resyncPeriod: 3s\n")
	l.createPool(t, "main", map[string]any{"addresses": []any{"203.0.113.0/27"}})
	ccm, _ := l.startCCM(t)
	l.waitNodesInitialised(t)
	// A class Service with the standard finalizer (as older versions left
	// them) gets pvelb's own instead.
	l.createService(t, "default", "legacy", withClass(lbClass), withFinalizer(lbFinalizer))
	l.waitIPs(t, "default", "legacy", 1)
	Eventually(t, 30*time.Second, "legacy carries pvelb's finalizer only", func(ctx context.Context) error {
		s, err := l.Client.CoreV1().Services("default").Get(ctx, "legacy", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !slices.Equal(s.Finalizers, []string{classFinalizer}) {
			return errorf("finalizers %v", s.Finalizers)
		}
		return nil
	})

	const n = 10
	for i := range n {
		l.createService(t, "default", fmt.Sprintf("sw-%d", i))
	}
	for i := range n {
		l.waitIPs(t, "default", fmt.Sprintf("sw-%d", i), 1)
	}
	watch := watchAddressInvariant(t, l.Client)
	for i := range n {
		name := fmt.Sprintf("sw-%d", i)
		l.patchService(t, "default", name, `{"spec":{"type":"ClusterIP","allocateLoadBalancerNodePorts":null}}`)
		l.patchService(t, "default", name, fmt.Sprintf(`{"spec":{"type":"LoadBalancer","loadBalancerClass":%q}}`, lbClass))
	}
	for i := range n {
		l.waitIPs(t, "default", fmt.Sprintf("sw-%d", i), 1)
	}
	l.waitHeldAsShown(t)
	before := l.snapshot(t)
	Consistently(t, 3*time.Second, "class allocations stay", func(context.Context) error {
		if now := l.snapshot(t); !maps.Equal(now, before) {
			return errorf("addresses changed:\nbefore %v\nafter  %v", before, now)
		}
		return nil
	})
	l.waitHeldAsShown(t)

	// A terminating Service still showing its address.
	for _, class := range []bool{true, false} {
		name := "held-classless"
		opts := []svcOpt{withFinalizer(holdFinalizer)}
		if class {
			name = "held-class"
			opts = append(opts, withClass(lbClass))
		}
		l.createService(t, "default", name, opts...)
		ip := l.waitIPs(t, "default", name, 1)[0]
		if err := l.Client.CoreV1().Services("default").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		l.createService(t, "default", name+"-next")
		next := l.waitIPs(t, "default", name+"-next", 1)[0]
		if shown := l.ipsOf(t, "default", name); len(shown) > 0 && next == ip {
			t.Errorf("%s-next got %s while the terminating %s still shows it", name, next, name)
		}
		l.waitHeldAsShown(t)
	}
	// A restart moves nothing, terminating Services included.
	before = l.snapshot(t)
	ccm.Stop()
	l.startCCM(t)
	Consistently(t, 4*time.Second, "addresses after a restart", func(context.Context) error {
		if now := l.snapshot(t); !maps.Equal(now, before) {
			return errorf("addresses changed:\nbefore %v\nafter  %v", before, now)
		}
		return nil
	})
	for _, name := range []string{"held-class", "held-classless"} {
		l.dropFinalizer(t, "default", name, holdFinalizer)
	}
	l.waitHeldAsShown(t)
	noViolations(t, watch, 0)
}

// TestTerminatingHolderKeepsItsAddress: a pvelb-class Service deleted while
// another finalizer keeps it (here without a service controller, whose own
// cleanup would clear the status) still shows its address until pvelb clears
// its status: no other Service gets the address meanwhile, and a restart
// with the terminating Service still there takes no address from a live one.
func TestTerminatingHolderKeepsItsAddress(t *testing.T) {
	l := lbLab(t, "loadBalancer:\n  serveClasslessServices: false\nfirewall:\n  resyncPeriod: 3s\n")
	l.createPool(t, "main", map[string]any{"addresses": []any{"203.0.113.0/29"}})
	ccm, _ := l.startCCM(t)
	l.waitNodesInitialised(t)
	watch := watchAddressInvariant(t, l.Client)
	l.createService(t, "default", "old", withClass(lbClass), withFinalizer(holdFinalizer))
	ip := l.waitIPs(t, "default", "old", 1)[0]
	if err := l.Client.CoreV1().Services("default").Delete(context.Background(), "old", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	l.createService(t, "default", "new", withClass(lbClass))
	got := l.waitIPs(t, "default", "new", 1)[0]
	if shown := l.ipsOf(t, "default", "old"); len(shown) > 0 && got == ip {
		t.Errorf("new got %s while the terminating old still shows it", got)
	}
	l.waitHeldAsShown(t)
	before := l.snapshot(t)
	ccm.Stop()
	l.startCCM(t)
	Consistently(t, 4*time.Second, "addresses after a restart", func(context.Context) error {
		if now := l.snapshot(t); !maps.Equal(now, before) {
			return errorf("addresses changed:\nbefore %v\nafter  %v", before, now)
		}
		return nil
	})
	l.dropFinalizer(t, "default", "old", holdFinalizer)
	l.waitHeldAsShown(t)
	noViolations(t, watch, 0)
}

// signal sends sig to the process's group (pvelb-ccm has no children, but
// Start put it in its own group).
func (p *Process) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		t.Fatal(err)
	}
}

// TestPausedLeaderWritesNothing: the leader is paused (SIGSTOP) long enough
// for the standby to take over; the new leader releases the addresses of
// deleted Services and gives them to new ones. When the old leader runs
// again its workers find those events at once, in any order (a new Service
// before the deletion that freed its address), while its elector may take
// a renew deadline to give up; it must write nothing: no address moves and
// no two Services show one address. Three rounds, each with a new standby.
func TestPausedLeaderWritesNothing(t *testing.T) {
	l := lbLab(t, "loadBalancer:\n  serveClasslessServices: false\nfirewall:\n  resyncPeriod: 3s\n")
	l.createPool(t, "main", map[string]any{"addresses": []any{"203.0.113.0/27"}})
	leader, _ := l.startCCM(t)
	l.waitNodesInitialised(t)
	watch := watchAddressInvariant(t, l.Client)
	const k = 6
	for round := range 3 {
		for i := range k {
			l.createService(t, "default", fmt.Sprintf("d%d-%d", round, i), withClass(lbClass))
		}
		for i := range k {
			l.waitIPs(t, "default", fmt.Sprintf("d%d-%d", round, i), 1)
		}
		standby, _ := l.startCCM(t)
		time.Sleep(time.Second)
		leader.signal(t, syscall.SIGSTOP)
		time.Sleep(6 * time.Second) // lease 4 s: the standby leads now
		for i := range k {
			if err := l.Client.CoreV1().Services("default").Delete(context.Background(), fmt.Sprintf("d%d-%d", round, i), metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		Eventually(t, 30*time.Second, "deleted Services gone", func(ctx context.Context) error {
			for i := range k {
				if _, err := l.Client.CoreV1().Services("default").Get(ctx, fmt.Sprintf("d%d-%d", round, i), metav1.GetOptions{}); err == nil {
					return errorf("d%d-%d still there", round, i)
				}
			}
			return nil
		})
		for i := range k {
			l.createService(t, "default", fmt.Sprintf("n%d-%d", round, i), withClass(lbClass))
		}
		for i := range k {
			l.waitIPs(t, "default", fmt.Sprintf("n%d-%d", round, i), 1)
		}
		before := l.snapshot(t)
		leader.signal(t, syscall.SIGCONT)
		Eventually(t, 20*time.Second, "the old leader exits", func(context.Context) error {
			if !leader.Exited() {
				return errorf("still running")
			}
			return nil
		})
		// What the old leader tried in the window between waking up and
		// its elector giving up (renew deadline 3 s).
		fenced := strings.Count(leader.Output(), "may no longer lead")
		t.Logf("round %d: the old leader's attempts refused by the fence: %d", round, fenced)
		Consistently(t, 2*time.Second, "addresses after the old leader ran again", func(context.Context) error {
			if now := l.snapshot(t); !maps.Equal(now, before) {
				return errorf("addresses changed:\nbefore %v\nafter  %v", before, now)
			}
			return nil
		})
		leader = standby
	}
	l.waitHeldAsShown(t)
	noViolations(t, watch, 0)
}

// TestNodeDeletedWithoutLeaderIsCleaned: a Node deleted while no pvelb-ccm
// led leaves no trace in the API, yet its VM still holds pvelb's entries and,
// once repurposed, would send from and answer for the VIPs. The record of
// the VMs with pvelb's entries (ConfigMap pvelb-firewall-vms) lets the next
// leader find that VM and remove them; the user's entries stay.
func TestNodeDeletedWithoutLeaderIsCleaned(t *testing.T) {
	l := lbLab(t, "firewall:\n  resyncPeriod: 3s\n")
	l.createPool(t, "main", map[string]any{"addresses": []any{"192.0.2.128/28"}})
	ccm, _ := l.startCCM(t)
	l.waitNodesInitialised(t)
	l.createService(t, "default", "web")
	ip := l.waitIPs(t, "default", "web", 1)[0]
	gone, stays := labVMs[2], labVMs[1]
	admitted := func(vm labVM) bool {
		ours, _ := l.setEntries(vmScope(vm), vmSet)
		return slices.Contains(ours, ip)
	}
	Eventually(t, 30*time.Second, "the VIP admitted on both workers' VMs", func(context.Context) error {
		if !admitted(gone) || !admitted(stays) {
			return errorf("not yet")
		}
		return nil
	})
	ccm.Stop()
	if err := l.Client.CoreV1().Nodes().Delete(context.Background(), gone.name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	l.startCCM(t)
	Eventually(t, 30*time.Second, "pvelb's entries removed from the VM of the deleted Node", func(context.Context) error {
		if ours, _ := l.setEntries(vmScope(gone), vmSet); len(ours) != 0 {
			return errorf("%s still holds %v", gone.name, ours)
		}
		return nil
	})
	if _, users := l.setEntries(vmScope(gone), vmSet); !slices.ContainsFunc(users, func(u string) bool { return strings.HasPrefix(u, gone.ip+" ") }) {
		t.Fatalf("the user's entry for the VM's own address was removed: %v", users)
	}
	if !admitted(stays) {
		t.Fatalf("the VIP is no longer admitted on %s", stays.name)
	}
}

// TestFlipToClassThenDeleteReleases: a class-less Service the service
// controller gave an address is switched to ClusterIP, back to a
// LoadBalancer of class pvelb.io/loadbalancer and deleted, each right after
// the other. The service controller then takes its delete path for a
// Service of a class and releases nothing (not its own any more), and the
// class controller must release what it left: the churn suite found the
// address held for a Service that no longer existed, kept in the IPSets.
func TestFlipToClassThenDeleteReleases(t *testing.T) {
	l := lbLab(t, "firewall:\n  resyncPeriod: 3s\n")
	l.createPool(t, "main", map[string]any{"addresses": []any{"203.0.113.0/27"}})
	l.startCCM(t)
	l.waitNodesInitialised(t)
	const n = 10
	for i := range n {
		l.createService(t, "default", fmt.Sprintf("flip-%d", i))
	}
	for i := range n {
		l.waitIPs(t, "default", fmt.Sprintf("flip-%d", i), 1)
	}
	for i := range n {
		name := fmt.Sprintf("flip-%d", i)
		l.patchService(t, "default", name, `{"spec":{"type":"ClusterIP","allocateLoadBalancerNodePorts":null}}`)
		l.patchService(t, "default", name, fmt.Sprintf(`{"spec":{"type":"LoadBalancer","loadBalancerClass":%q}}`, lbClass))
		if err := l.Client.CoreV1().Services("default").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, 30*time.Second, "every flipped Service gone", func(ctx context.Context) error {
		list, err := l.Client.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, s := range list.Items {
			if strings.HasPrefix(s.Name, "flip-") {
				return errorf("%s still there (finalizers %v)", s.Name, s.Finalizers)
			}
		}
		return nil
	})
	l.waitHeldAsShown(t)
}
