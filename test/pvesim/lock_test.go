package pvesim

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWritesToDifferentVMsRunInParallel proves overlap by ordering: each
// write waits inside its lock until the other VM's write is inside too,
// which only happens if the two locks are independent.
func TestWritesToDifferentVMsRunInParallel(t *testing.T) {
	ts, c := newSim(t, Options{WriteLatency: 10 * time.Millisecond})
	inside := map[int]chan struct{}{100: make(chan struct{}), 101: make(chan struct{})}
	var met atomic.Int32
	ts.lockHook = func(key int) {
		other := map[int]int{100: 101, 101: 100}[key]
		close(inside[key])
		select {
		case <-inside[other]:
			met.Add(1)
		case <-time.After(5 * time.Second):
		}
	}
	var wg sync.WaitGroup
	for _, vm := range []struct{ node, id string }{{"pve1", "100"}, {"pve2", "101"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := c.do("POST", "/nodes/"+vm.node+"/qemu/"+vm.id+"/firewall/ipset", vals("name", "ipfilter-net0"))
			if r.Code != 200 {
				t.Errorf("vm %s: %s", vm.id, r.Status)
			}
		}()
	}
	wg.Wait()
	if met.Load() != 2 {
		t.Fatalf("writes to VMs 100 and 101 were not inside their locks at the same time")
	}
}

// TestWritesToOneScopeSerialise checks that no two writes to the same VM or
// to the cluster firewall ever hold the lock together, and that every write
// lands (none lost to a race).
func TestWritesToOneScopeSerialise(t *testing.T) {
	ts, c := newSim(t, Options{WriteLatency: 5 * time.Millisecond})
	ts.SeedIPSet(vmScope(100), "ipfilter-net0")
	ts.SeedIPSet(clusterSc(), "vips")
	var holders [2]atomic.Int32
	var overlap atomic.Bool
	ts.lockHook = func(key int) {
		i := 0
		if key == 100 {
			i = 1
		}
		if holders[i].Add(1) > 1 {
			overlap.Store(true)
		}
		time.Sleep(2 * time.Millisecond)
		holders[i].Add(-1)
	}
	var wg sync.WaitGroup
	const n = 8
	for i := 0; i < n; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if r := c.do("POST", "/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0", vals("cidr", fmt.Sprintf("192.0.2.%d", i+1))); r.Code != 200 {
				t.Errorf("vm write: %s", r.Status)
			}
		}()
		go func() {
			defer wg.Done()
			if r := c.do("POST", "/cluster/firewall/ipset/vips", vals("cidr", fmt.Sprintf("198.51.100.%d", i+1))); r.Code != 200 {
				t.Errorf("cluster write: %s", r.Status)
			}
		}()
	}
	wg.Wait()
	if overlap.Load() {
		t.Fatal("two writes held one scope's lock at once")
	}
	if a, b := len(ts.IPSetEntries(vmScope(100), "ipfilter-net0")), len(ts.IPSetEntries(clusterSc(), "vips")); a != n || b != n {
		t.Fatalf("entries %d and %d, want %d each", a, b, n)
	}
}

func TestLockTimeout(t *testing.T) {
	ts, c := newSim(t, Options{LockTimeout: 50 * time.Millisecond})
	release := make(chan struct{})
	entered := make(chan int, 4)
	ts.lockHook = func(key int) {
		entered <- key
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
	}
	cases := []struct{ path, lock string }{
		{"/nodes/pve1/qemu/100/firewall/ipset", "firewall-vm-100"},
		{"/cluster/firewall/ipset", "firewall-cluster"},
	}
	for _, tc := range cases {
		done := make(chan reply, 1)
		go func() { done <- c.do("POST", tc.path, vals("name", "first")) }()
		<-entered // the first write holds the lock
		c.do("POST", tc.path, vals("name", "second")).want(t, "500 cfs-lock '"+tc.lock+"' error: got lock request timeout")
		release <- struct{}{}
		if r := <-done; r.Code != 200 {
			t.Fatalf("first write: %s", r.Status)
		}
	}
}
