package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvefw"
)

// The load scenario: loadSteps Services (IPv6, from the load pool), the
// announcers' requests per second to the apiserver in a steady window once
// every Service has its address, and the resident set of each node's
// announcer.
var loadSteps = []int{100, 1000}

const (
	// loadConverge bounds the wait for every Service to have its address.
	loadConverge = 5 * time.Minute
	// loadSettle passes after convergence before the window opens: the
	// announcers' first pass over the new Services is not steady load (with
	// 1000, pvelb's announcers were still writing ServiceAnnouncements 15 s
	// after the last address).
	loadSettle = 45 * time.Second
	// loadWindow is the steady window the request rate is measured over.
	loadWindow = 30 * time.Second
	// loadCreators is how many Services are created at once.
	loadCreators = 8
)

// loadRange is the address range every implementation is given for the
// load Services: 1024 addresses of the nodes' IPv6 subnet (the IPv4 VIP
// range of the lab holds 55), clear of the hosts and netlab.VIP6.
func loadRange() (netip.Addr, netip.Addr) {
	a := netlab.Subnet6.Addr().As16()
	a[13] = 1 // ...::1:0
	first := netip.AddrFrom16(a)
	a[14] = 3
	a[15] = 0xff // ...::1:3ff
	return first, netip.AddrFrom16(a)
}

func loadRangeString() string {
	f, l := loadRange()
	return f.String() + "-" + l.String()
}

// loadVerbs are the verbs counted one by one: one FlowSchema each.
var loadVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete"}

// loadFlowSchema names the FlowSchema that classifies the announcers'
// requests of one verb. It matches right after the mandatory "exempt"
// schema (which takes only system:masters, not the announcers' user) and
// uses the exempt priority level, so the announcers are neither queued nor
// limited: only counted, by the apiserver's
// apiserver_flowcontrol_dispatched_requests_total.
func loadFlowSchema(verb string) string { return "a-lab-announcer-" + verb }

// benchPeerLoad measures, in a lab with the VM firewalls off, the
// announcers' steady API load at each of loadSteps Services and the
// resident set of each node's announcer process(es).
func benchPeerLoad(b *testing.B, impl lbImpl, r *peerResult) {
	start := time.Now()
	l := newTrafficLab(b, peerOpts(impl, pvefw.Classic, true, -1))
	l.countAnnouncerRequests(b)
	l.widenPool(b, impl)
	created := 0
	for _, n := range loadSteps {
		t0, before := time.Now(), l.announcerRequests(b)
		l.createLoadServices(b, created, n)
		got := l.waitLoadAddresses(b, n)
		conv := time.Since(t0)
		burst := requestCounts(before, l.announcerRequests(b))
		// Not converged: the rest is measured with the addresses handed
		// out so far, and says so; no larger step follows.
		partial := ""
		if got < n {
			partial = fmt.Sprintf(" (%d addressed)", got)
			r.set(fmt.Sprintf("load-converge-%d", n), fmt.Sprintf("not converged within %s (%d of %d)", loadConverge, got, n))
			b.Logf("%s: %d of %d Services have an address after %s", impl.name(), got, n, loadConverge)
		} else {
			r.set(fmt.Sprintf("load-converge-%d", n), fmt.Sprintf("%.0f s", conv.Seconds()))
		}
		r.set(fmt.Sprintf("load-burst-%d", n), burst+partial)
		b.Logf("%s: %d Services created and addressed in %s; announcers' requests meanwhile: %s", impl.name(), n-created, conv.Round(time.Second), burst)
		created = n
		time.Sleep(loadSettle)
		before = l.announcerRequests(b)
		w0 := time.Now()
		time.Sleep(loadWindow)
		after := l.announcerRequests(b)
		rate := requestRates(before, after, time.Since(w0))
		rss, exited := l.announcerRSS(b)
		// An announcer that exited is not restarted (no kubelet here):
		// the cells say so, and no larger step follows.
		if len(exited) > 0 {
			partial += "; exited: " + strings.Join(exited, "; ")
		}
		rssCell := "n/a (every announcer exited)"
		if len(rss) > 0 {
			rssCell = rssStats(rss)
		}
		r.set(fmt.Sprintf("load-api-%d", n), rate+partial)
		r.set(fmt.Sprintf("load-rss-%d", n), rssCell+partial)
		b.Logf("%s with %d Services (%d addressed after %s): announcers' requests %s; resident set per node %v MiB; exited %v", impl.name(), n, got, conv.Round(time.Second), rate, rss, exited)
		if got < n || len(exited) > 0 {
			break
		}
	}
	r.set("load-time", fmt.Sprintf("%.0f s", time.Since(start).Seconds()))
	b.Logf("%s: load scenario took %s", impl.name(), time.Since(start).Round(time.Second))
}

// countAnnouncerRequests creates one FlowSchema per verb for the
// announcers' user and waits until the apiserver classifies with them.
func (l *trafficLab) countAnnouncerRequests(b *testing.B) {
	ctx := context.Background()
	for _, verb := range loadVerbs {
		fs := &flowcontrolv1.FlowSchema{
			ObjectMeta: metav1.ObjectMeta{Name: loadFlowSchema(verb)},
			Spec: flowcontrolv1.FlowSchemaSpec{
				PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: flowcontrolv1.PriorityLevelConfigurationNameExempt},
				MatchingPrecedence:         2, // 1 is exempt's alone
				Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
					Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: apiserver.AnnouncerUser}}},
					ResourceRules: []flowcontrolv1.ResourcePolicyRule{{
						Verbs: []string{verb}, APIGroups: []string{"*"}, Resources: []string{"*"},
						ClusterScope: true, Namespaces: []string{"*"},
					}},
					NonResourceRules: []flowcontrolv1.NonResourcePolicyRule{{Verbs: []string{verb}, NonResourceURLs: []string{"*"}}},
				}},
			},
		}
		if _, err := l.kube.FlowcontrolV1().FlowSchemas().Create(ctx, fs, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			b.Fatal(err)
		}
	}
	// The apiserver's APF controller marks a schema it uses; the
	// announcers already watch, so their gets and updates show soon.
	Eventually(b, time.Minute, "announcers' requests counted by their FlowSchemas", func(ctx context.Context) error {
		n := 0.0
		for _, v := range l.announcerRequests(b) {
			n += v
		}
		if n == 0 {
			return errorf("no request of %s counted yet", apiserver.AnnouncerUser)
		}
		return nil
	})
}

// announcerRequests reads the apiserver's dispatched-request counters of
// the announcers' FlowSchemas, by verb.
func (l *trafficLab) announcerRequests(b *testing.B) map[string]float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := l.kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		b.Fatalf("apiserver /metrics: %v", err)
	}
	return dispatchedByVerb(string(raw))
}

// dispatchedByVerb picks apiserver_flowcontrol_dispatched_requests_total
// of the announcers' FlowSchemas out of the apiserver's metrics text.
func dispatchedByVerb(metrics string) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.SplitSeq(metrics, "\n") {
		rest, ok := strings.CutPrefix(line, "apiserver_flowcontrol_dispatched_requests_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		for _, verb := range loadVerbs {
			if strings.Contains(labels, `flow_schema="`+loadFlowSchema(verb)+`"`) {
				if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
					out[verb] += v
				}
			}
		}
	}
	return out
}

// requestCounts says how many requests were made between two readings,
// in all and by verb, e.g. "120 (get 20, update 100)".
func requestCounts(before, after map[string]float64) string {
	return requestsBy(before, after, 1, "%.0f", "0", "%.0f (%s)")
}

// requestRates says the total rate between two readings and the rate of
// each verb that moved, e.g. "12.3 req/s (get 2.0, update 10.3)".
func requestRates(before, after map[string]float64, d time.Duration) string {
	return requestsBy(before, after, d.Seconds(), "%.1f", "0 req/s", "%.1f req/s (%s)")
}

// requestsBy formats the requests made between two readings, each divided
// by per: each verb that moved with num, none as zero, all as total.
func requestsBy(before, after map[string]float64, per float64, num, zero, total string) string {
	sum := 0.0
	var parts []string
	for _, verb := range loadVerbs {
		n := after[verb] - before[verb]
		if n <= 0 {
			continue
		}
		sum += n
		parts = append(parts, verb+" "+fmt.Sprintf(num, n/per))
	}
	if len(parts) == 0 {
		return zero
	}
	return fmt.Sprintf(total, sum/per, strings.Join(parts, ", "))
}

// widenPool gives the implementation the load range besides its IPv4
// range, each the way its docs configure a pool: pvelb's IPPool "main",
// a second MetalLB IPAddressPool (the L2Advertisement without a pool
// selector announces every pool), kube-vip-cloud-provider's range-global
// with an IPv4 and an IPv6 range.
func (l *trafficLab) widenPool(b *testing.B, impl lbImpl) {
	ctx := context.Background()
	switch impl.(type) {
	case pvelbImpl:
		pool, err := l.dyn.Resource(ippoolGVR).Get(ctx, tlPool, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		addrs, _, _ := unstructured.NestedStringSlice(pool.Object, "spec", "addresses")
		if err := unstructured.SetNestedStringSlice(pool.Object, append(addrs, loadRangeString()), "spec", "addresses"); err != nil {
			b.Fatal(err)
		}
		if _, err := l.dyn.Resource(ippoolGVR).Update(ctx, pool, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
	case *metallbImpl:
		gvr := schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: "ipaddresspools"}
		pool := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
			"metadata": map[string]any{"name": "load", "namespace": metallbNS},
			"spec":     map[string]any{"addresses": []any{loadRangeString()}},
		}}
		if _, err := l.dyn.Resource(gvr).Namespace(metallbNS).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	case kubeVIPImpl:
		cm, err := l.kube.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, "kubevip", metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		cm.Data["range-global"] = peerRange() + "," + loadRangeString()
		if _, err := l.kube.CoreV1().ConfigMaps(metav1.NamespaceSystem).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
	default:
		b.Fatalf("no load pool for %s", impl.name())
	}
}

func loadServiceName(i int) string { return fmt.Sprintf("load-%04d", i) }

// createLoadServices creates Services from..to-1: IPv6 only (the load
// range), for the app=web pods, loadCreators at a time.
func (l *trafficLab) createLoadServices(b *testing.B, from, to int) {
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	single := corev1.IPFamilyPolicySingleStack
	for range loadCreators {
		wg.Go(func() {
			for i := range next {
				s := &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: loadServiceName(i)},
					Spec: corev1.ServiceSpec{
						Type:           corev1.ServiceTypeLoadBalancer,
						IPFamilyPolicy: &single,
						IPFamilies:     []corev1.IPFamily{corev1.IPv6Protocol},
						Selector:       map[string]string{"app": tlAppLabel},
						Ports:          []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
					},
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_, err := l.kube.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{})
				cancel()
				if err != nil && !apierrors.IsAlreadyExists(err) {
					mu.Lock()
					firstErr = cmpOr(firstErr, fmt.Errorf("creating %s: %w", s.Name, err))
					mu.Unlock()
				}
			}
		})
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// waitLoadAddresses waits up to loadConverge until n load Services have
// an address and returns how many had one at the end.
func (l *trafficLab) waitLoadAddresses(b *testing.B, n int) int {
	got := 0
	for end := time.Now().Add(loadConverge); ; time.Sleep(2 * time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		list, err := l.kube.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
		cancel()
		if err != nil {
			b.Logf("listing Services: %v", err)
		} else {
			got = 0
			for _, s := range list.Items {
				if strings.HasPrefix(s.Name, "load-") && len(s.Status.LoadBalancer.Ingress) > 0 {
					got++
				}
			}
		}
		if got >= n || time.Now().After(end) {
			return got
		}
	}
}

// announcerRSS returns the resident set in MiB of each running node's
// announcer process group (the announcer and any child it runs, without
// the `ip netns exec` and `env` that started it, both of which exec), and
// for each announcer that has exited its node and first panic or last line.
func (l *trafficLab) announcerRSS(b *testing.B) (mib []float64, exited []string) {
	for _, h := range l.net.Nodes {
		p := l.ann[h.Name]
		if p.Exited() {
			exited = append(exited, h.Name+" ("+exitReason(p.Output())+")")
			continue
		}
		kib, err := groupRSS(p.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		mib = append(mib, float64(kib)/1024)
	}
	return mib, exited
}

// exitReason picks the first "panic: " line of a process's output and the
// function that panicked, else its last line.
func exitReason(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i, line := range lines {
		j := strings.Index(line, "panic: ")
		if j < 0 {
			continue
		}
		why := strings.TrimSpace(line[j:])
		for k := i + 1; k+1 < len(lines); k++ {
			if strings.HasPrefix(strings.TrimSpace(lines[k]), "goroutine ") {
				fn, _, _ := strings.Cut(strings.TrimSpace(lines[k+1]), "(0x")
				return why + " in " + fn
			}
		}
		return why
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

// groupRSS sums VmRSS (KiB) of the processes in process group pgid.
func groupRSS(pgid int) (int, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, err
	}
	total, n := 0, 0
	for _, path := range stats {
		st, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces.
		i := strings.LastIndexByte(string(st), ')')
		f := strings.Fields(string(st)[i+1:])
		if len(f) < 3 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		comm := string(st)[strings.IndexByte(string(st), '(')+1 : i]
		if comm == "ip" || comm == "env" {
			continue
		}
		status, err := os.ReadFile(filepath.Join(filepath.Dir(path), "status"))
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
				if err != nil {
					return 0, fmt.Errorf("%s: VmRSS %q", path, v)
				}
				total += kib
				n++
			}
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("no process in group %d", pgid)
	}
	return total, nil
}

// rssStats is "median / max MiB" over the nodes.
func rssStats(mib []float64) string {
	s := slices.Clone(mib)
	slices.Sort(s)
	med := (s[(len(s)-1)/2] + s[len(s)/2]) / 2 // two nodes left: their mean
	return fmt.Sprintf("%.0f / %.0f MiB", med, s[len(s)-1])
}

// TestLoadCells: only the announcers' FlowSchemas count, summed
// over priority levels, by verb; an exited announcer is named by its panic.
func TestLoadCells(t *testing.T) {
	metrics := `# TYPE apiserver_flowcontrol_dispatched_requests_total counter
apiserver_flowcontrol_dispatched_requests_total{flow_schema="a-lab-announcer-get",priority_level="exempt"} 40
apiserver_flowcontrol_dispatched_requests_total{flow_schema="a-lab-announcer-update",priority_level="exempt"} 7
apiserver_flowcontrol_dispatched_requests_total{flow_schema="a-lab-announcer-update",priority_level="other"} 3
apiserver_flowcontrol_dispatched_requests_total{flow_schema="exempt",priority_level="exempt"} 900
apiserver_flowcontrol_current_executing_requests{flow_schema="a-lab-announcer-get",priority_level="exempt"} 5
`
	got := dispatchedByVerb(metrics)
	want := map[string]float64{"get": 40, "update": 10}
	if len(got) != len(want) || got["get"] != want["get"] || got["update"] != want["update"] {
		t.Errorf("dispatchedByVerb = %v, want %v", got, want)
	}
	if s := requestRates(map[string]float64{"get": 10}, got, 10*time.Second); s != "4.0 req/s (get 3.0, update 1.0)" {
		t.Errorf("requestRates = %q", s)
	}
	if s := requestCounts(map[string]float64{"get": 10}, got); s != "40 (get 30, update 10)" {
		t.Errorf("requestCounts = %q", s)
	}
	crash := "I1201 started\npanic: runtime error: index out of range [8] with length 1\n\ngoroutine 14 [running]:\n" +
		"github.com/kube-vip/kube-vip/pkg/services.(*Processor).RefreshUPNPForwards(0x3f4bb70e7860)\n\tservices.go:510 +0x299\n"
	if s := exitReason(crash); s != "panic: runtime error: index out of range [8] with length 1 in github.com/kube-vip/kube-vip/pkg/services.(*Processor).RefreshUPNPForwards" {
		t.Errorf("exitReason = %q", s)
	}
	if s := rssStats([]float64{83, 87}); s != "85 / 87 MiB" {
		t.Errorf("rssStats = %q", s)
	}
	if s := exitReason("a\nstopped\n"); s != "stopped" {
		t.Errorf("exitReason = %q", s)
	}
}
