package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

// BenchmarkAdmitCycle measures one full cycle, 100 VIPs admitted on 3 VMs
// (plus the cluster set) and then released, against the simulator with 20 ms
// per firewall write (a .fw rewrite under the cfs lock), per-VIP versus
// admit-ranges. writes/op is the number of Proxmox writes the simulator saw.
func BenchmarkAdmitCycle(b *testing.B) {
	for _, mode := range []struct {
		name        string
		admitRanges bool
	}{{"per-vip", false}, {"admit-ranges", true}} {
		b.Run(mode.name, func(b *testing.B) {
			e := newEnv(b, pvesim.Options{WriteLatency: 20 * time.Millisecond}, pve.Options{},
				Options{AdmitRanges: mode.admitRanges}, threeVMs)
			for i := range e.vms {
				e.vms[i].ipfilter = true
				e.sim.SetFirewallOptions(e.vms[i].id, true, true)
			}
			var svcs []service
			for i := range 100 {
				svcs = append(svcs, service{fmt.Sprintf("bench/svc-%d", i), []string{fmt.Sprintf("192.0.2.%d", 10+i)}})
			}
			ranges := []PoolRange{{Pool: "bench", First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.200")}}
			full, empty := e.desired(svcs...), e.desired()
			full.Ranges, empty.Ranges = ranges, ranges
			cycle := func() {
				for _, d := range []Desired{full, empty} {
					if err := e.rec.SetDesired(d); err != nil {
						b.Fatal(err)
					}
					if err := e.rec.Reconcile(context.Background()).Err(); err != nil {
						b.Fatal(err)
					}
				}
			}
			cycle() // creates and seeds the VMs' sets once, outside the measurement
			e.sim.ResetStats()
			b.ResetTimer()
			for b.Loop() {
				cycle()
			}
			b.StopTimer()
			writes := e.sim.Stats().Writes
			b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
			// Steady state on top: a pass with nothing changed must write nothing.
			if err := e.rec.SetDesired(full); err != nil {
				b.Fatal(err)
			}
			e.rec.Reconcile(context.Background())
			e.sim.ResetStats()
			if res := e.rec.Reconcile(context.Background()); res.Writes() != 0 || e.sim.Stats().Writes != 0 {
				b.Fatalf("steady state wrote %d times", e.sim.Stats().Writes)
			}
		})
	}
}
