package firewall

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

// updatingClient counts the in-place comment updates the reconciler makes
// through the real client.
type updatingClient struct {
	*recordingClient
	puts atomic.Int32
}

func newUpdatingClient(_ *testing.T, e *env) *updatingClient {
	return &updatingClient{recordingClient: e.wrapped}
}

func (c *updatingClient) UpdateIPSetEntry(ctx context.Context, scope pve.Scope, name string, entry pve.IPSetEntry) error {
	c.puts.Add(1)
	return c.recordingClient.UpdateIPSetEntry(ctx, scope, name, entry)
}

func TestSimSharedIPCommentUpdatedInPlace(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:1])
	uc := newUpdatingClient(t, e)
	rec, err := New(map[string]pve.Client{region: uc}, Options{Metrics: NewMetrics(e.reg)})
	if err != nil {
		t.Fatal(err)
	}
	e.rec = rec
	w1 := vmScope(threeVMs[0])
	e.mustPass(e.desired(service{"default/web", []string{"192.0.2.10"}}))

	// default/api starts sharing 192.0.2.10 and brings a VIP of its own: the
	// add comes first, so the update must re-read the digest.
	d := e.desired(service{"default/web", []string{"192.0.2.10"}}, service{"default/api", []string{"192.0.2.11"}})
	d.VIPs = append(d.VIPs, VIP{Addr: addrs("192.0.2.10")[0], Services: []string{"default/api"}})
	res := e.mustPass(d)
	if n := uc.puts.Load(); n != 2 {
		t.Fatalf("%d PUTs, want 2 (cluster set and VM set)", n)
	}
	e.expect(w1, "ipfilter-net0", "198.51.100.11["+SeedComment+"]",
		"192.0.2.10[pvelb: default/api,default/web]", "192.0.2.11[pvelb: default/api]")
	e.expect(pve.ClusterScope, "pvelb-vips", "192.0.2.10[pvelb: default/api,default/web]", "192.0.2.11[pvelb: default/api]")
	if s, _ := res.Set(region, w1.VM, "ipfilter-net0"); s.Writes[ActionUpdateComment] != 1 || s.Writes[ActionAdd] != 1 {
		t.Fatalf("VM set writes = %v", s.Writes)
	}
	e.sim.ResetStats()
	if res := e.mustPass(d); res.Writes() != 0 || e.sim.Stats().Writes != 0 {
		t.Fatalf("steady state after update wrote %d times", e.sim.Stats().Writes)
	}
}
