package loadbalancer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/names"
)

// eventsOf drains the fake recorder: "Type Reason message" each.
func eventsOf(r *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-r.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// withServices gives c a Service lister holding svcs and a fake recorder.
func withServices(t *testing.T, c *Controller, svcs ...*v1.Service) *record.FakeRecorder {
	t.Helper()
	index := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, s := range svcs {
		if err := index.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	c.services = listersv1.NewServiceLister(index)
	rec := record.NewFakeRecorder(100)
	c.recorder = rec
	return rec
}

// TestFirewallResultEventsOncePerChange: a Service whose VIPs a VM refused
// gets one Warning per distinct failure, not one per pass, and one Normal
// Event when it is repaired.
func TestFirewallResultEventsOncePerChange(t *testing.T) {
	c := ownershipController(t)
	rec := withServices(t, c, lbService("web", nil))
	failed := func(msg string) firewall.Result {
		return firewall.Result{Scopes: []firewall.ScopeResult{{Region: "lab", Services: []string{"default/web"}, Err: errors.New(msg)}}}
	}
	steps := []struct {
		res  firewall.Result
		want string // the reason of the one Event, "" for none
	}{
		{failed("403 Permission check failed"), names.EventFirewallFailed},
		{failed("403 Permission check failed"), ""},
		{failed("500 lock timeout"), names.EventFirewallFailed},
		{firewall.Result{Scopes: []firewall.ScopeResult{{Region: "lab", Services: []string{"default/web"}}}}, names.EventFirewallOK},
		{firewall.Result{}, ""},
	}
	for i, s := range steps {
		c.onFirewallResult(s.res)
		got := eventsOf(rec)
		switch {
		case s.want == "" && len(got) != 0:
			t.Errorf("step %d: Events %q, want none", i, got)
		case s.want != "" && (len(got) != 1 || !strings.Contains(got[0], " "+s.want+" ")):
			t.Errorf("step %d: Events %q, want one %s", i, got, s.want)
		}
	}
	if v := c.fwFailing; len(v) != 0 {
		t.Errorf("still failing after the repair: %v", v)
	}
}

// TestRestoreKeepsAddressesAndNamesTheLoser: restore replays the addresses
// Services show; of two showing one address, the older keeps it and the
// newer gets a Warning naming the holder.
func TestRestoreKeepsAddressesAndNamesTheLoser(t *testing.T) {
	older, newer := lbService("older", nil), lbService("newer", nil)
	older.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
	newer.CreationTimestamp = metav1.NewTime(time.Now())
	for _, s := range []*v1.Service{older, newer} {
		s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "192.0.2.1"}}
	}
	c := ownershipController(t)
	rec := withServices(t, c, older, newer)
	if err := c.restore(); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	kept := c.alloc.Assigned(allocator.ServiceKey{Namespace: "default", Name: "older"})
	c.mu.Unlock()
	if len(kept) != 1 || kept[0].String() != "192.0.2.1" {
		t.Errorf("the older Service holds %v, want 192.0.2.1", kept)
	}
	got := eventsOf(rec)
	if len(got) != 1 || !strings.Contains(got[0], names.EventRestoreConflict) || !strings.Contains(got[0], "default/older") {
		t.Errorf("Events %q, want one %s naming default/older", got, names.EventRestoreConflict)
	}
	// The winner's next ensure keeps the address; the loser's gets another.
	ctx := context.Background()
	if st, err := c.ensure(ctx, older.DeepCopy(), viaServiceController); err != nil || st.Ingress[0].IP != "192.0.2.1" {
		t.Errorf("ensure(older) = %v, %v; want 192.0.2.1 kept", st, err)
	}
	if st, err := c.ensure(ctx, newer.DeepCopy(), viaServiceController); err != nil || st.Ingress[0].IP == "192.0.2.1" {
		t.Errorf("ensure(newer) = %v, %v; want another address", st, err)
	}
}
