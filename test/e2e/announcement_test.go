package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
)

// announcementsOf lists the ServiceAnnouncements of Service svc (default
// namespace), typed.
func (l *annLab) announcementsOf(ctx context.Context, svc string) ([]v1alpha1.ServiceAnnouncement, error) {
	list, err := l.dyn.Resource(names.ServiceAnnouncements).Namespace("default").List(ctx, metav1.ListOptions{
		LabelSelector: names.LabelAnnouncedService + "=" + svc,
	})
	if err != nil {
		return nil, err
	}
	out := make([]v1alpha1.ServiceAnnouncement, len(list.Items))
	for i := range list.Items {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// waitAnnouncedBy waits until exactly one ServiceAnnouncement of svc holds
// vip, and it is node's: L2, with the Proxmox host and VM of its Node, and
// owned by the Service (so it goes with it).
func (l *annLab) waitAnnouncedBy(t testing.TB, svc, node string, vip netip.Addr) v1alpha1.ServiceAnnouncement {
	t.Helper()
	var got v1alpha1.ServiceAnnouncement
	Eventually(t, 30*time.Second, "ServiceAnnouncement of "+svc+" names "+node+" for "+vip.String(), func(ctx context.Context) error {
		anns, err := l.announcementsOf(ctx, svc)
		if err != nil {
			return err
		}
		var holders []v1alpha1.ServiceAnnouncement
		var who []string
		for _, a := range anns {
			if slices.Contains(a.Status.IPs, vip.String()) {
				holders = append(holders, a)
				who = append(who, a.Status.Node)
			}
		}
		if len(holders) != 1 {
			return fmt.Errorf("%s announced by %v, want one node", vip, who)
		}
		got = holders[0]
		st := got.Status
		if st.Node != node || st.Service != svc || st.Mode != v1alpha1.AnnouncementL2 {
			return fmt.Errorf("status %+v", st)
		}
		n, err := l.kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if st.ProxmoxHost == "" || st.ProxmoxHost != n.Labels[names.LabelProxmoxHost] || st.VMID != n.Labels[names.LabelProxmoxVMID] {
			return fmt.Errorf("host %q VM %q, Node labels %v", st.ProxmoxHost, st.VMID, n.Labels)
		}
		s, err := l.kube.CoreV1().Services("default").Get(ctx, svc, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(got.OwnerReferences) != 1 || got.OwnerReferences[0].UID != s.UID {
			return fmt.Errorf("owner references %+v, want the Service %s", got.OwnerReferences, s.UID)
		}
		return nil
	})
	return got
}

// checkAnnouncementTable reads the ServiceAnnouncements as `kubectl get`
// does (a server-side Table) and checks the row of svc shows the node, its
// Proxmox host and VM.
func (l *annLab) checkAnnouncementTable(t testing.TB, ann v1alpha1.ServiceAnnouncement) {
	t.Helper()
	ctx := context.Background()
	raw, err := l.kube.CoreV1().RESTClient().Get().
		AbsPath("/apis", v1alpha1.GroupName, "v1alpha1", "namespaces", "default", names.ServiceAnnouncements.Resource).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, c := range table.ColumnDefinitions {
		col[c.Name] = i
	}
	for _, name := range []string{"Service", "IPs", "Mode", "Node", "Proxmox Host", "VM"} {
		if _, ok := col[name]; !ok {
			t.Fatalf("kubectl get serviceannouncements has no column %q: %+v", name, table.ColumnDefinitions)
		}
	}
	for _, r := range table.Rows {
		if r.Cells[0] != ann.Name {
			continue
		}
		cell := func(name string) string { return fmt.Sprint(r.Cells[col[name]]) }
		t.Logf("kubectl get svcann: %v", r.Cells)
		if cell("Node") != ann.Status.Node || cell("Proxmox Host") != ann.Status.ProxmoxHost || cell("VM") != ann.Status.VMID ||
			cell("Service") != ann.Status.Service {
			t.Errorf("row %v does not show %+v", r.Cells, ann.Status)
		}
		return
	}
	t.Errorf("no row for %s in %+v", ann.Name, table.Rows)
}

// announcementWriteRequests is the apiserver's count of write requests
// (apply, patch, create, update, delete) on what the announcers write:
// ServiceAnnouncements and BGPPeer status. It counts what a watch cannot
// see: an apply that changes nothing is not stored.
func (l *annLab) announcementWriteRequests(t testing.TB) float64 {
	t.Helper()
	raw, err := l.kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") ||
			!strings.Contains(line, `resource="serviceannouncements"`) && !strings.Contains(line, `resource="bgppeers"`) {
			continue
		}
		verb := regexp.MustCompile(`verb="([A-Z]+)"`).FindStringSubmatch(line)
		if verb == nil || !slices.Contains([]string{"APPLY", "PATCH", "POST", "CREATE", "PUT", "UPDATE", "DELETE"}, verb[1]) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		n += v
	}
	return n
}

// annResync is the lab announcers' --resync-period.
const annResync = 5 * time.Second

// countAnnouncementWrites watches every ServiceAnnouncement for d and
// returns the changes seen plus the write requests the apiserver served:
// in a quiet cluster there must be none, however long (the lab's
// announcers resync every annResync: d longer than that sees a full pass).
func (l *annLab) countAnnouncementWrites(t testing.TB, d time.Duration) int {
	t.Helper()
	before := l.announcementWriteRequests(t)
	defer func() {
		if n := l.announcementWriteRequests(t) - before; n != 0 {
			t.Errorf("%v ServiceAnnouncement and BGPPeer write requests during the quiet interval, want 0", n)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	list, err := l.dyn.Resource(names.ServiceAnnouncements).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := l.dyn.Resource(names.ServiceAnnouncements).Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	n := 0
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				if ctx.Err() == nil {
					t.Errorf("the watch closed after %d events, before the interval ended", n)
				}
				return n
			}
			n++
			t.Logf("ServiceAnnouncement %s during the quiet interval: %+v", ev.Type, ev.Object)
		case <-ctx.Done():
			return n
		}
	}
}

// waitAnnouncers waits until the ServiceAnnouncements of svc are exactly
// one per node in nodes, each holding vip in mode.
func (l *annLab) waitAnnouncers(t testing.TB, timeout time.Duration, svc string, vip netip.Addr, mode v1alpha1.AnnouncementMode, nodes ...string) {
	t.Helper()
	want := slices.Sorted(slices.Values(nodes))
	Eventually(t, timeout, fmt.Sprintf("%s announced by %v", svc, want), func(ctx context.Context) error {
		anns, err := l.announcementsOf(ctx, svc)
		if err != nil {
			return err
		}
		var got []string
		for _, a := range anns {
			if a.Status.Mode != mode || !slices.Contains(a.Status.IPs, vip.String()) {
				return fmt.Errorf("%s: %+v", a.Name, a.Status)
			}
			got = append(got, a.Status.Node)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("announced by %v", got)
		}
		return nil
	})
}

// waitSessions waits until BGPPeer peer's status.sessions is exactly nodes,
// each in state.
func (l *annLab) waitSessions(t testing.TB, timeout time.Duration, peer, state string, nodes ...string) {
	t.Helper()
	want := slices.Sorted(slices.Values(nodes))
	Eventually(t, timeout, fmt.Sprintf("BGPPeer %s sessions of %v %s", peer, want, state), func(ctx context.Context) error {
		u, err := l.dyn.Resource(names.BGPPeers).Get(ctx, peer, metav1.GetOptions{})
		if err != nil {
			return err
		}
		p, err := names.BGPPeer(u)
		if err != nil {
			return err
		}
		var got []string
		for _, s := range p.Status.Sessions {
			if s.State != state {
				return fmt.Errorf("%s is %s", s.Node, s.State)
			}
			got = append(got, s.Node)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("sessions of %v", got)
		}
		return nil
	})
}
