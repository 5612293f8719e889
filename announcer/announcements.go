package announcer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
)

// announcementManager is the field manager of the announcers' writes.
const announcementManager = "pvelb-announcer"

// svcKey names a Service.
type svcKey struct{ namespace, name string }

// desiredAnnouncements is what node announces, per Service: the addresses
// it answers ARP/NDP for (l2, with their interfaces) and those it
// advertises over BGP (bgp), with the Proxmox host and VM from its Node's
// labels. A Service with addresses in both modes gets mode L2+BGP.
func desiredAnnouncements(node string, self *v1.Node, plan []Assignment, l2 map[netip.Addr]string, bgp map[netip.Addr]bool) map[svcKey]v1alpha1.ServiceAnnouncementStatus {
	out := map[svcKey]v1alpha1.ServiceAnnouncementStatus{}
	var host, vmid string
	if self != nil {
		host, vmid = self.Labels[names.LabelProxmoxHost], self.Labels[names.LabelProxmoxVMID]
	}
	for _, a := range plan {
		ifs, isL2 := l2[a.IP]
		isBGP := bgp[a.IP]
		if !isL2 && !isBGP {
			continue
		}
		for _, key := range a.Services {
			ns, name, _ := strings.Cut(key, "/")
			k := svcKey{ns, name}
			st, ok := out[k]
			if !ok {
				st = v1alpha1.ServiceAnnouncementStatus{Service: name, Node: node, ProxmoxHost: host, VMID: vmid}
			}
			st.IPs = append(st.IPs, a.IP.String())
			st.Mode = mergeMode(st.Mode, isL2, isBGP)
			if isL2 {
				st.Interfaces = joinSet(st.Interfaces, ifs)
			}
			out[k] = st
		}
	}
	for k, st := range out {
		slices.SortFunc(st.IPs, func(a, b string) int {
			return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b))
		})
		st.IPs = slices.Compact(st.IPs)
		out[k] = st
	}
	return out
}

func mergeMode(m v1alpha1.AnnouncementMode, l2, bgp bool) v1alpha1.AnnouncementMode {
	l2 = l2 || m == v1alpha1.AnnouncementL2 || m == v1alpha1.AnnouncementL2BGP
	bgp = bgp || m == v1alpha1.AnnouncementBGP || m == v1alpha1.AnnouncementL2BGP
	switch {
	case l2 && bgp:
		return v1alpha1.AnnouncementL2BGP
	case l2:
		return v1alpha1.AnnouncementL2
	}
	return v1alpha1.AnnouncementBGP
}

// joinSet adds the comma-separated items of b to those of a, sorted, once.
func joinSet(a, b string) string {
	var items []string
	for _, s := range []string{a, b} {
		if s != "" {
			items = append(items, strings.Split(s, ",")...)
		}
	}
	slices.Sort(items)
	return strings.Join(slices.Compact(items), ",")
}

// announcementName is the object's name: "<service>.<node>", or the
// Service's name and a hash of the node's when that is too long.
func announcementName(service, node string) string {
	name := service + "." + node
	if len(name) <= validation.DNS1123SubdomainMaxLength {
		return name
	}
	sum := sha256.Sum256([]byte(node))
	return service + "." + hex.EncodeToString(sum[:8])
}

// written is what this node last wrote for a Service: the status and the
// Service's UID the owner reference names (a recreated Service gets its
// own object; the old one goes with the old Service), and when.
type written struct {
	status v1alpha1.ServiceAnnouncementStatus
	uid    types.UID
	at     time.Time
}

const (
	// reapGrace: an announcer deletes no other node's objects in its first
	// seconds, before it has heard the nodes that are alive.
	reapGrace = 10 * time.Second
	// healAfter: an object of this node's that is missing from the cache
	// this long after it was written was deleted by someone (a node that
	// took this one for gone); it is written again on the next pass.
	healAfter = 5 * time.Second
)

// announcements keeps this node's ServiceAnnouncements in step with what it
// announces. It writes only when that changes (never on a timer or because
// another writer touched an object, so two announcers with different views
// cannot fight), on its own goroutine so the apiserver never delays an
// election, and retries failed writes with backoff.
type announcements struct {
	node    string
	dyn     dynamic.Interface
	factory dynamicinformer.DynamicSharedInformerFactory
	// cache holds this node's own objects only, compacted to typed
	// ServiceAnnouncements (compactAnnouncement).
	cache    cache.Indexer
	synced   cache.InformerSynced
	services corelisters.ServiceLister
	nodes    corelisters.NodeLister
	// electable lists the nodes that may be elected in this node's view,
	// sorted; the first one tidies up after gone nodes even for Services
	// it does not announce.
	electable func() []string
	metric    *prometheus.GaugeVec
	kick      chan struct{}

	mu   sync.Mutex
	plan []Assignment
	l2   map[netip.Addr]string
	bgp  map[netip.Addr]bool

	// Touched only on run's goroutine.
	done    map[svcKey]written // nil until read back from the cache
	started time.Time
	// reapedFor is the view of the last successful reap ("" before the
	// first): the reap lists every node's objects from the apiserver, so it
	// runs only when the gone nodes, the Nodes or this node's addresses
	// changed.
	reapedFor string
	reapedIPs map[string]bool
	gone      goneTracker
	// timer: a pass is scheduled for when the next absent node counts as
	// gone.
	timer atomic.Bool
}

func (w *announcements) setL2(plan []Assignment, won map[netip.Addr]string) {
	w.mu.Lock()
	w.plan, w.l2 = plan, cloneMap(won)
	w.mu.Unlock()
	w.trigger()
}

func (w *announcements) setBGP(advertised map[netip.Addr]bool) {
	w.mu.Lock()
	w.bgp = cloneMap(advertised)
	w.mu.Unlock()
	w.trigger()
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (w *announcements) trigger() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *announcements) run(ctx context.Context) {
	w.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), w.synced) {
		return
	}
	w.started = time.Now()
	backoff := time.Duration(0)
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-retry:
		}
		if w.sync(ctx) {
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			retry = time.After(backoff)
		} else {
			backoff, retry = 0, nil
		}
	}
}

// sync writes what changed; it reports whether a write failed.
func (w *announcements) sync(ctx context.Context) (failed bool) {
	if w.done == nil {
		w.done = w.readBack()
	}
	w.mu.Lock()
	plan, l2, bgp := w.plan, w.l2, w.bgp
	w.mu.Unlock()
	self, _ := w.nodes.Get(w.node)
	want := desiredAnnouncements(w.node, self, plan, l2, bgp)
	w.setMetric(plan, l2, bgp)

	mine := map[string]bool{}
	for k, st := range want {
		for _, ip := range st.IPs {
			mine[ip] = true
		}
		svc, err := w.services.Services(k.namespace).Get(k.name)
		if err != nil {
			continue // deleted: its announcements go with it
		}
		if d, ok := w.done[k]; ok && d.uid == svc.UID && reflect.DeepEqual(d.status, st) && !w.deleted(k, d) {
			continue
		}
		if err := w.apply(ctx, svc, st); err != nil {
			klog.ErrorS(err, "Writing ServiceAnnouncement", "service", klog.KObj(svc))
			failed = true
			continue
		}
		w.done[k] = written{st, svc.UID, time.Now()}
	}
	for k := range w.done {
		if _, ok := want[k]; ok {
			continue
		}
		err := w.dyn.Resource(names.ServiceAnnouncements).Namespace(k.namespace).Delete(ctx, announcementName(k.name, w.node), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			klog.ErrorS(err, "Deleting ServiceAnnouncement", "service", klog.KRef(k.namespace, k.name))
			failed = true
			continue
		}
		delete(w.done, k)
	}
	return w.reap(ctx, mine) || failed
}

// deleted reports whether this node's object for k, written as d, is gone
// from the cache although it was written a while ago.
func (w *announcements) deleted(k svcKey, d written) bool {
	if time.Since(d.at) < healAfter {
		return false
	}
	_, found, err := w.cache.GetByKey(k.namespace + "/" + announcementName(k.name, w.node))
	return err == nil && !found
}

// reap deletes the announcements of nodes that are gone in this node's
// view (out of the electable set for goneAfter: crashed, partitioned away;
// or deleted): those for addresses this node announces now, or all of them
// on the first electable node. It reads every node's objects from the
// apiserver, so only when the gone nodes, the Nodes or this node's
// addresses changed since the last reap, and never in the first
// reapGrace, before this node has heard the others.
func (w *announcements) reap(ctx context.Context, mine map[string]bool) (failed bool) {
	if time.Since(w.started) < reapGrace {
		return false
	}
	electable := w.electable()
	nodeObjs, _ := w.nodes.List(labels.Everything())
	var nodes []string
	for _, n := range nodeObjs {
		nodes = append(nodes, n.Name)
	}
	slices.Sort(nodes)
	gone, next := w.gone.update(time.Now(), nodes, electable)
	if next > 0 && w.timer.CompareAndSwap(false, true) {
		time.AfterFunc(next, func() { w.timer.Store(false); w.trigger() })
	}
	view := strings.Join(gone, ",") + "|" + strings.Join(nodes, ",")
	if view == w.reapedFor && maps.Equal(mine, w.reapedIPs) {
		return false
	}
	reporter := len(electable) > 0 && electable[0] == w.node
	list, err := w.dyn.Resource(names.ServiceAnnouncements).List(ctx, metav1.ListOptions{})
	if err != nil {
		klog.ErrorS(err, "Listing ServiceAnnouncements")
		return true
	}
	for i := range list.Items {
		sa, err := toAnnouncement(&list.Items[i])
		if err != nil || sa.Status.Node == w.node || sa.Status.Node == "" || !isGone(sa.Status.Node, gone, nodes, electable) {
			continue
		}
		if !reporter && !slices.ContainsFunc(sa.Status.IPs, func(ip string) bool { return mine[ip] }) {
			continue
		}
		uid := sa.UID
		err = w.dyn.Resource(names.ServiceAnnouncements).Namespace(sa.Namespace).Delete(ctx, sa.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			klog.ErrorS(err, "Deleting the ServiceAnnouncement of a gone node", "announcement", klog.KObj(sa), "node", sa.Status.Node)
			failed = true
			continue
		}
		klog.InfoS("Deleted the ServiceAnnouncement of a gone node", "announcement", klog.KObj(sa), "node", sa.Status.Node)
	}
	if !failed {
		w.reapedFor, w.reapedIPs = view, mine
	}
	return failed
}

// isGone: node has been out of the electable set for goneAfter, or its
// Node object is gone and it is not electable.
func isGone(node string, gone, nodes, electable []string) bool {
	if slices.Contains(gone, node) {
		return true
	}
	_, known := slices.BinarySearch(nodes, node)
	return !known && !slices.Contains(electable, node)
}

// readBack takes this node's objects from the cache as written, so a
// restarted announcer that still announces the same rewrites nothing, and
// deletes what it no longer announces.
func (w *announcements) readBack() map[svcKey]written {
	out := map[svcKey]written{}
	for _, o := range w.cache.List() {
		sa, err := toAnnouncement(o.(runtime.Object))
		if err != nil || sa.Status.Node != w.node || sa.Name != announcementName(sa.Status.Service, w.node) {
			continue
		}
		var uid types.UID
		for _, ref := range sa.OwnerReferences {
			if ref.Kind == "Service" && ref.Name == sa.Status.Service {
				uid = ref.UID
			}
		}
		out[svcKey{sa.Namespace, sa.Status.Service}] = written{sa.Status, uid, time.Now()}
	}
	return out
}

// compactAnnouncement is the cache's transform: a typed copy holding only
// what the writer reads, far smaller than the unstructured object.
func compactAnnouncement(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil // a tombstone
	}
	sa, err := toAnnouncement(u)
	if err != nil {
		return nil, err
	}
	return &v1alpha1.ServiceAnnouncement{
		ObjectMeta: metav1.ObjectMeta{
			Name: sa.Name, Namespace: sa.Namespace, UID: sa.UID, ResourceVersion: sa.ResourceVersion,
			OwnerReferences: sa.OwnerReferences,
		},
		Status: sa.Status,
	}, nil
}

func toAnnouncement(o runtime.Object) (*v1alpha1.ServiceAnnouncement, error) {
	if sa, ok := o.(*v1alpha1.ServiceAnnouncement); ok {
		return sa, nil
	}
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return nil, errNotUnstructured
	}
	sa := &v1alpha1.ServiceAnnouncement{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, sa); err != nil {
		return nil, err
	}
	return sa, nil
}

var errNotUnstructured = apierrors.NewBadRequest("not an unstructured object")

// apply creates or replaces this node's object for svc with one
// server-side apply.
func (w *announcements) apply(ctx context.Context, svc *v1.Service, st v1alpha1.ServiceAnnouncementStatus) error {
	obj := &v1alpha1.ServiceAnnouncement{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "ServiceAnnouncement"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      announcementName(svc.Name, w.node),
			Namespace: svc.Namespace,
			Labels: map[string]string{
				names.LabelAnnouncedService: svc.Name,
				names.LabelAnnouncingNode:   names.NodeLabelValue(w.node),
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
			}},
		},
		Status: st,
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	unstructured.RemoveNestedField(m, "metadata", "creationTimestamp")
	_, err = w.dyn.Resource(names.ServiceAnnouncements).Namespace(svc.Namespace).Apply(ctx, obj.Name,
		&unstructured.Unstructured{Object: m}, metav1.ApplyOptions{FieldManager: announcementManager, Force: true})
	return err
}

// setMetric makes pvelb_announcer_vip_announced show what this node
// announces now: one series per address, mode and Service.
func (w *announcements) setMetric(plan []Assignment, l2 map[netip.Addr]string, bgp map[netip.Addr]bool) {
	if w.metric == nil {
		return
	}
	w.metric.Reset()
	for _, a := range plan {
		for mode, on := range map[v1alpha1.AnnouncementMode]bool{v1alpha1.AnnouncementL2: l2[a.IP] != "", v1alpha1.AnnouncementBGP: bgp[a.IP]} {
			if !on {
				continue
			}
			for _, key := range a.Services {
				ns, name, _ := strings.Cut(key, "/")
				w.metric.WithLabelValues(a.IP.String(), w.node, string(mode), ns, name).Set(1)
			}
		}
	}
}
