package announcer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/announcer/arp"
	"github.com/pvelb/pvelb/announcer/bgp/desired"
	"github.com/pvelb/pvelb/announcer/membership"
	"github.com/pvelb/pvelb/announcer/ndp"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

// IPPoolResource is the IPPool resource, watched through the dynamic client.
var IPPoolResource = schema.GroupVersionResource{Group: v1alpha1.GroupName, Version: "v1alpha1", Resource: "ippools"}

// Event reasons on Services.
const (
	// EventAnnouncing names the node that now answers for an address; the
	// winner writes it on every takeover, so `kubectl describe service`
	// shows the current node last.
	EventAnnouncing = "Announcing"
	// EventNotAnnounced is a warning that no node may announce an address,
	// with the reason; one announcer (the first live one by name) writes it
	// when the reason appears or changes, so it does not multiply by nodes.
	EventNotAnnounced = "NotAnnounced"
)

// Config of the controller.
type Config struct {
	// Node is this node's name.
	Node       string
	Kube       kubernetes.Interface
	Dynamic    dynamic.Interface
	Membership *membership.Membership
	// MembershipPort is where peers listen (their InternalIP:port).
	MembershipPort int
	// Interface overrides the default interface (the one holding the node's
	// InternalIP) for pools that name none.
	Interface string
	// HandoverTimeout bounds the wait for successors on shutdown (default 1s).
	HandoverTimeout time.Duration
	// RestartInPlace: on Stop, a node that stays in the cluster keeps its
	// VIPs through its announcer's restart (Membership.Restart) instead of
	// handing them over; see Stop.
	RestartInPlace bool
	// ClaimDelay is how long this node waits before answering for a VIP it
	// takes from a node that may still answer (a failback after that node's
	// restart, or after this node's own partition healed, when it saw no
	// owner at all), so the previous owner has stopped before the new one
	// starts: a short gap instead of two answerers. The previous owner
	// learns the news from the heartbeat this node sends out of turn when
	// it becomes electable, within a millisecond or two on a LAN. Failover
	// from a node known to be dead or leaving is immediate. Default 50ms
	// (half the default heartbeat interval).
	ClaimDelay time.Duration
	// Registerer receives the controller's metrics when set.
	Registerer prometheus.Registerer
	// BGP enables the embedded BGP speaker for pools in bgp mode; nil
	// leaves BGP pools unannounced by this node.
	BGP *BGPConfig
}

// Controller runs the election and drives the responders.
type Controller struct {
	cfg      Config
	recorder record.EventRecorder
	metrics  *metrics

	services  corelisters.ServiceLister
	nodes     corelisters.NodeLister
	slices    discoverylisters.EndpointSliceLister
	pools     cache.GenericLister
	synced    []cache.InformerSynced
	factory   informers.SharedInformerFactory
	dfactory  dynamicinformer.DynamicSharedInformerFactory
	broadcast record.EventBroadcaster

	kick chan struct{}
	// handingOver: Handover keeps the responders answering after this node
	// left the membership, until its successors claimed (mayAnswer).
	handingOver atomic.Bool

	mu         sync.Mutex
	ready      bool
	leaving    bool
	responders map[string]*l2        // by interface
	won        map[netip.Addr]string // won IP -> interface list, for events and handover
	winners    map[netip.Addr]string // last computed winner of every IP
	// lastUnservable is what unservable last found, to log changes once.
	lastUnservable []string
	// openFailed: interfaces whose responders could not be opened (a
	// missing capability, a socket error); unservable until a trial open
	// in checkLinks succeeds. Touched only on Run's goroutine.
	openFailed map[string]error
	// claimAt holds, for VIPs taken from a still-electable node, when this
	// node may start answering (see Config.ClaimDelay).
	claimAt map[netip.Addr]time.Time
	// unannounced holds the reason reported for every IP nobody may
	// announce, so the Event is written once per change.
	unannounced map[netip.Addr]string

	bgp *bgpState
}

type l2 struct {
	arp    *arp.Responder
	ndp    *ndp.Responder
	cancel context.CancelFunc
	done   chan struct{} // closed once both responders have stopped
	asked  atomic.Bool   // close was called: a stop is not a failure
}

// stopped reports whether the pair has stopped (a socket failed for good).
func (r *l2) stopped() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// close stops both responders and releases their sockets.
func (r *l2) close() {
	r.asked.Store(true)
	r.cancel()
	<-r.done
	if r.arp != nil {
		_ = r.arp.Close()
	}
	if r.ndp != nil {
		_ = r.ndp.Close()
	}
}

// reopenDelay spaces out reopening a responder whose socket failed, so an
// interface that keeps failing costs one attempt a second, not a busy loop.
const reopenDelay = time.Second

// reapStopped drops responders whose sockets failed, so this reconcile
// reopens them. Without it a node that keeps winning the election would
// answer nothing for its VIPs and no other node would take over.
func (c *Controller) reapStopped() {
	for ifname, r := range c.responders {
		if r.stopped() {
			klog.InfoS("Reopening ARP/NDP responder after its socket failed", "interface", ifname)
			r.close()
			delete(c.responders, ifname)
		}
	}
}

// New wires informers; nothing runs before Run.
func New(cfg Config) (*Controller, error) {
	if cfg.Node == "" {
		return nil, errors.New("announcer: node name is empty (set --node-name or NODE_NAME)")
	}
	if cfg.Kube == nil || cfg.Dynamic == nil || cfg.Membership == nil {
		return nil, errors.New("announcer: Kube, Dynamic and Membership are required")
	}
	if cfg.MembershipPort <= 0 || cfg.MembershipPort > 65535 {
		return nil, fmt.Errorf("announcer: membership port %d out of 1..65535", cfg.MembershipPort)
	}
	if cfg.HandoverTimeout == 0 {
		cfg.HandoverTimeout = time.Second
	}
	if cfg.ClaimDelay == 0 {
		cfg.ClaimDelay = 50 * time.Millisecond
	}
	c := &Controller{
		cfg:        cfg,
		metrics:    newMetrics(cfg.Registerer),
		kick:       make(chan struct{}, 1),
		responders: map[string]*l2{},
		won:        map[netip.Addr]string{},
		winners:    map[netip.Addr]string{},
		claimAt:    map[netip.Addr]time.Time{},
		openFailed: map[string]error{},

		unannounced: map[netip.Addr]string{},
	}
	c.factory = informers.NewSharedInformerFactory(cfg.Kube, 0)
	c.dfactory = dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, 0)
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.trigger() },
		UpdateFunc: func(any, any) { c.trigger() },
		DeleteFunc: func(any) { c.trigger() },
	}
	svcInf := c.factory.Core().V1().Services()
	nodeInf := c.factory.Core().V1().Nodes()
	esInf := c.factory.Discovery().V1().EndpointSlices()
	poolInf := c.dfactory.ForResource(IPPoolResource)
	infs := []cache.SharedIndexInformer{svcInf.Informer(), nodeInf.Informer(), esInf.Informer(), poolInf.Informer()}
	if b := cfg.BGP; b != nil {
		if b.SpeakerBinary == "" {
			return nil, errors.New("announcer: BGP speaker binary (pvelb-bgp-speaker) must be set")
		}
		if b.LocalASN == 0 {
			return nil, errors.New("announcer: BGP local ASN must be 1-4294967295")
		}
		if b.ListenPort < desired.NoListen || b.ListenPort == 0 || b.ListenPort > 65535 {
			return nil, fmt.Errorf("announcer: BGP listen port %d: must be -1 (no listener) or 1-65535", b.ListenPort)
		}
		if b.RouterID.IsValid() && (!b.RouterID.Is4() || b.RouterID.IsUnspecified()) {
			return nil, fmt.Errorf("announcer: BGP router ID %s: must be a non-zero IPv4 address", b.RouterID)
		}
		bc := *b
		if bc.PasswordTTL <= 0 {
			bc.PasswordTTL = 30 * time.Second
		}
		// Not in c.synced: ARP/NDP must not wait for BGPPeers (a watch of
		// an empty resource can take a while to report its initial list).
		peerInf := c.dfactory.ForResource(BGPPeerResource)
		if _, err := peerInf.Informer().AddEventHandler(handler); err != nil {
			return nil, err
		}
		c.bgp = &bgpState{cfg: bc, peers: peerInf.Lister(), synced: peerInf.Informer().HasSynced, kick: make(chan struct{}, 1),
			passwords: map[string]cachedPassword{}, advertised: map[netip.Addr]bool{}}
		if cfg.Registerer != nil {
			cfg.Registerer.MustRegister(bgpCollector{c.bgp})
		}
	}
	for _, inf := range append(slices.Clone(infs), c.bgpInformers()...) {
		if err := inf.SetTransform(trimForCache); err != nil {
			return nil, err
		}
	}
	for _, inf := range infs {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return nil, err
		}
		c.synced = append(c.synced, inf.HasSynced)
	}
	c.services, c.nodes, c.slices, c.pools = svcInf.Lister(), nodeInf.Lister(), esInf.Lister(), poolInf.Lister()

	c.broadcast = record.NewBroadcaster()
	c.broadcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cfg.Kube.CoreV1().Events("")})
	c.recorder = c.broadcast.NewRecorder(scheme.Scheme, v1.EventSource{Component: "pvelb-announcer", Host: cfg.Node})
	return c, nil
}

func (c *Controller) bgpInformers() []cache.SharedIndexInformer {
	if c.bgp == nil {
		return nil
	}
	return []cache.SharedIndexInformer{c.dfactory.ForResource(BGPPeerResource).Informer()}
}

// trimForCache drops what the announcer never reads before objects enter
// the informer caches: managed fields (often the largest part of a small
// object) and a Node's list of container images.
func trimForCache(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	if n, ok := obj.(*v1.Node); ok {
		n.Status.Images = nil
	}
	return obj, nil
}

func (c *Controller) trigger() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Ready reports whether the caches synced and the first election ran.
func (c *Controller) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// Run starts the informers and reconciles on every change of the watched
// objects or of the membership, until ctx ends. It does not hand over: call
// Handover first for a graceful stop.
func (c *Controller) Run(ctx context.Context) error {
	defer c.broadcast.Shutdown()
	c.factory.Start(ctx.Done())
	c.dfactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return errors.New("announcer: informer caches did not sync")
	}
	klog.InfoS("Informer caches synced", "node", c.cfg.Node)
	if c.bgp != nil {
		go func() {
			if cache.WaitForCacheSync(ctx.Done(), c.bgp.synced) {
				c.trigger()
			}
		}()
		// BGP runs on its own loop: starting the speaker and reading
		// password Secrets (with timeouts, retried while the apiserver is
		// down) must never delay an ARP/NDP failover.
		go c.runBGP(ctx)
	}
	defer c.closeResponders()
	defer c.stopBGP(3 * time.Second)
	// A periodic pass catches anything an event missed (an interface that
	// appeared late, a responder that failed to open) without hammering.
	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	links := time.NewTicker(time.Second)
	defer links.Stop()
	c.reconcile(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-c.cfg.Membership.Changes():
		case <-resync.C:
		case <-links.C:
			c.checkLinks()
			continue
		}
		c.reconcile(ctx)
	}
}

func (c *Controller) reconcile(ctx context.Context) {
	start := time.Now()
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "Listing nodes")
		return
	}
	c.cfg.Membership.SetPeers(c.peers(nodes))

	services, _ := c.services.List(labels.Everything())
	eps, _ := c.slices.List(labels.Everything())
	pools := c.listPools()
	c.cfg.Membership.SetUnservable(c.unservable(nodes, pools))
	plan := Plan(Inputs{Services: services, Pools: pools, Nodes: nodes, ReadyNodes: ReadyNodes(eps),
		Alive: c.cfg.Membership.Electable, CanServe: c.cfg.Membership.CanServe})

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leaving {
		return // the handover owns the responders now
	}
	byIface := map[string][]netip.Addr{}
	won := map[netip.Addr]string{}
	var wonAssignments []Assignment
	var defIface string
	var defErr error
	now := time.Now()
	pending := map[netip.Addr]time.Time{}
	for _, a := range plan {
		if a.Mode == v1alpha1.AnnounceBGP {
			continue
		}
		prev, known := c.winners[a.IP]
		if !known || prev != a.Winner {
			c.metrics.elections.Inc()
			klog.V(2).InfoS("Election", "ip", a.IP, "winner", a.Winner, "candidates", a.Candidates, "reason", a.Reason)
		}
		c.winners[a.IP] = a.Winner
		if a.Winner != c.cfg.Node {
			continue
		}
		if _, serving := c.won[a.IP]; !serving {
			at, waiting := c.claimAt[a.IP]
			if !waiting && !(known && prev != "" && !c.cfg.Membership.Electable(prev)) {
				// Not a failover from a node known to be gone: the
				// previous owner may be live, in this node's view or
				// beyond it (this node had no quorum and saw no owner),
				// so let it hear the news and stop first.
				at, waiting = now.Add(c.cfg.ClaimDelay), true
				time.AfterFunc(c.cfg.ClaimDelay, c.trigger)
				klog.V(2).InfoS("Delaying claim until the previous owner has stopped", "ip", a.IP, "previous", prev, "delay", c.cfg.ClaimDelay)
			}
			if waiting && now.Before(at) {
				pending[a.IP] = at
				continue
			}
		}
		ifaces := a.Interfaces
		if len(ifaces) == 0 {
			if defIface == "" && defErr == nil {
				defIface, defErr = c.defaultInterface(nodes)
			}
			if defErr != nil {
				klog.ErrorS(defErr, "Cannot announce: no interface", "ip", a.IP)
				continue
			}
			ifaces = []string{defIface}
		}
		for _, i := range ifaces {
			byIface[i] = append(byIface[i], a.IP)
		}
		won[a.IP] = strings.Join(ifaces, ",")
		wonAssignments = append(wonAssignments, a)
	}
	c.claimAt = pending
	inPlan := make(map[netip.Addr]bool, len(plan))
	for _, a := range plan {
		if a.Mode != v1alpha1.AnnounceBGP {
			inPlan[a.IP] = true
		}
	}
	for ip := range c.winners {
		if !inPlan[ip] {
			delete(c.winners, ip)
		}
	}
	c.reapStopped()
	for ifname := range byIface {
		if _, ok := c.responders[ifname]; !ok {
			r, err := openL2(ifname, c.mayAnswer, c.cfg.Membership.MayAnswer, func() { time.AfterFunc(reopenDelay, c.trigger) })
			if err != nil {
				klog.ErrorS(err, "Cannot open ARP/NDP responder; leaving the elections of its pools", "interface", ifname)
				for _, ip := range byIface[ifname] {
					delete(won, ip)
				}
				// The next link check reports the pools unservable, so
				// another node is elected instead of this one answering
				// nothing.
				c.openFailed[ifname] = err
				continue
			}
			delete(c.openFailed, ifname)
			c.responders[ifname] = r
		}
	}
	for ifname, r := range c.responders {
		r.arp.SetIPs(byIface[ifname])
		r.ndp.SetIPs(byIface[ifname])
	}
	for _, a := range wonAssignments {
		ifs, ok := won[a.IP]
		if !ok {
			continue
		}
		if _, had := c.won[a.IP]; had {
			continue
		}
		klog.InfoS("Announcing", "ip", a.IP, "interfaces", ifs, "services", a.Services)
		for _, key := range a.Services {
			ns, name, _ := strings.Cut(key, "/")
			if svc, err := c.services.Services(ns).Get(name); err == nil {
				c.recorder.Eventf(svc, v1.EventTypeNormal, EventAnnouncing,
					"Node %s answers for %s (ARP/NDP on %s)", c.cfg.Node, a.IP, ifs)
			}
		}
	}
	c.won = won
	c.metrics.announced.Set(float64(len(won)))
	if c.bgp != nil {
		c.bgp.submit(bgpInput{nodes: nodes, plan: plan, pools: pools})
	}
	c.reportUnannounced(plan)
	if !c.ready {
		c.ready = true
	}
	c.metrics.reconcileSeconds.Observe(time.Since(start).Seconds())
}

// listPools reads the IPPools from the informer cache, typed.
func (c *Controller) listPools() map[string]*v1alpha1.IPPool {
	objs, _ := c.pools.List(labels.Everything())
	pools := make(map[string]*v1alpha1.IPPool, len(objs))
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var p v1alpha1.IPPool
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			klog.ErrorS(err, "Cannot read IPPool", "pool", u.GetName())
			continue
		}
		pools[p.Name] = &p
	}
	return pools
}

// peers maps every other node to its heartbeat address (InternalIP:port,
// preferring IPv4) and whether it counts towards the quorum.
func (c *Controller) peers(nodes []*v1.Node) map[string]membership.Peer {
	out := map[string]membership.Peer{}
	for _, n := range nodes {
		if n.Name == c.cfg.Node {
			continue
		}
		if ip, ok := internalIP(n); ok {
			out[n.Name] = membership.Peer{Addr: netip.AddrPortFrom(ip, uint16(c.cfg.MembershipPort)), Voter: !notReady(n)}
		}
	}
	return out
}

// notReady: the API reports the Node's kubelet silent (Ready False or
// Unknown). A Node without a Ready condition has not reported yet and
// still counts, which keeps the quorum strict.
func notReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status != v1.ConditionTrue
		}
	}
	return false
}

func internalIP(n *v1.Node) (netip.Addr, bool) {
	var v6 netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		if ip.Unmap().Is4() {
			return ip.Unmap(), true
		}
		if !v6.IsValid() {
			v6 = ip
		}
	}
	return v6, v6.IsValid()
}

// unservable lists what this node cannot answer ARP/NDP for, as the tokens
// Plan's CanServe takes: the ARP-mode pools naming an interface it lacks or
// has down, those without interfaces when its default interface is unusable,
// and "" (addresses outside every pool) in that case too. The membership
// carries the list to every peer, so no node elects this one for them.
func (c *Controller) unservable(nodes []*v1.Node, pools map[string]*v1alpha1.IPPool) []string {
	_, defErr := c.defaultInterface(nodes)
	var out []string
	if defErr != nil {
		out = append(out, "")
	}
	for name, p := range pools {
		if p.Spec.Announce.Mode == v1alpha1.AnnounceBGP {
			continue
		}
		ifaces := p.Spec.Announce.Interfaces
		if len(ifaces) == 0 {
			if defErr != nil {
				out = append(out, name)
			}
			continue
		}
		for _, i := range ifaces {
			if err := c.usable(i); err != nil {
				out = append(out, name)
				break
			}
		}
	}
	slices.Sort(out)
	if !slices.Equal(out, c.lastUnservable) {
		c.lastUnservable = out
		if len(out) > 0 {
			klog.InfoS("This node cannot answer for some pools; it leaves their elections", "pools", out, "defaultInterface", defErr)
		} else {
			klog.InfoS("This node can answer for every pool again")
		}
	}
	return out
}

// usable: usableLink, and this node's responders could be opened on it.
func (c *Controller) usable(name string) error {
	if err := c.openFailed[name]; err != nil {
		return err
	}
	return usableLink(name)
}

// usableLink: the interface exists, is up with a carrier, and has an
// Ethernet address to answer with.
func usableLink(name string) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagRunning == 0 {
		return fmt.Errorf("interface %s is down", name)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("interface %s has no Ethernet address", name)
	}
	return nil
}

// checkLinks re-evaluates what this node can serve between reconciles, so an
// interface going down moves its VIPs within a second; the membership
// signals a change, which reconciles.
func (c *Controller) checkLinks() {
	// On Run's goroutine, like reconcile: lastUnservable and openFailed
	// need no lock.
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	for ifname := range c.openFailed {
		if r, err := openL2(ifname, func() bool { return false }, nil, nil); err == nil {
			r.close()
			delete(c.openFailed, ifname)
			klog.InfoS("ARP/NDP responder can be opened again", "interface", ifname)
		}
	}
	c.cfg.Membership.SetUnservable(c.unservable(nodes, c.listPools()))
}

// defaultInterface is --interface, else the interface holding this node's
// InternalIP; either must be usable.
func (c *Controller) defaultInterface(nodes []*v1.Node) (string, error) {
	if c.cfg.Interface != "" {
		return c.cfg.Interface, c.usable(c.cfg.Interface)
	}
	var self *v1.Node
	for _, n := range nodes {
		if n.Name == c.cfg.Node {
			self = n
		}
	}
	if self == nil {
		return "", fmt.Errorf("node %s not found in the API", c.cfg.Node)
	}
	ip, ok := internalIP(self)
	if !ok {
		return "", fmt.Errorf("node %s has no InternalIP", c.cfg.Node)
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, ifi := range ifaces {
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == ip {
				return ifi.Name, c.usable(ifi.Name)
			}
		}
	}
	return "", fmt.Errorf("no interface holds node %s's InternalIP %s", c.cfg.Node, ip)
}

// openL2 starts the ARP and NDP responders of one interface. They answer
// only while fence (the membership's MayAnswer) allows, and re-assert a VIP
// against another MAC's claim while reassert does. If either stops on
// its own (its socket failed), both are stopped and onStop is called, so the
// controller reopens them.
func openL2(ifname string, fence, reassert func() bool, onStop func()) (*l2, error) {
	a, err := arp.New(ifname)
	if err != nil {
		return nil, err
	}
	n, err := ndp.New(ifname)
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	a.SetFence(fence)
	n.SetFence(fence)
	// Re-assert only with the membership's own permission: never while
	// handing over, when the successor's claim is what this node awaits.
	a.SetReassert(reassert)
	n.SetReassert(reassert)
	ctx, cancel := context.WithCancel(context.Background())
	r := &l2{arp: a, ndp: n, cancel: cancel, done: make(chan struct{})}
	go func() {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer cancel()
			if err := a.Run(ctx); err != nil {
				klog.ErrorS(err, "ARP responder stopped", "interface", ifname)
			}
		}()
		go func() {
			defer wg.Done()
			defer cancel()
			if err := n.Run(ctx); err != nil {
				klog.ErrorS(err, "NDP responder stopped", "interface", ifname)
			}
		}()
		wg.Wait()
		close(r.done)
		if !r.asked.Load() && onStop != nil {
			onStop()
		}
	}()
	klog.InfoS("Opened ARP/NDP responder", "interface", ifname, "mac", a.HardwareAddr())
	return r, nil
}

func (c *Controller) closeResponders() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, r := range c.responders {
		r.close()
		delete(c.responders, name)
	}
	c.won = map[netip.Addr]string{}
	c.metrics.announced.Set(0)
}

// reportUnannounced counts the addresses nobody may announce by reason and,
// on the first electable announcer by name only, warns on their Services when
// the reason appears or changes.
func (c *Controller) reportUnannounced(plan []Assignment) {
	counts := map[string]int{}
	current := map[netip.Addr]string{}
	for _, a := range plan {
		if a.Code != "" {
			counts[a.Code]++
			current[a.IP] = a.Code + ": " + a.Reason
		}
	}
	for _, code := range UnannouncedReasons {
		c.metrics.unannounced.WithLabelValues(code).Set(float64(counts[code]))
	}
	electable := c.cfg.Membership.ElectableNodes()
	reporter := len(electable) > 0 && electable[0] == c.cfg.Node
	for _, a := range plan {
		r, ok := current[a.IP]
		if !ok || c.unannounced[a.IP] == r {
			continue
		}
		klog.InfoS("Nobody may announce an address", "ip", a.IP, "reason", a.Code, "detail", a.Reason, "services", a.Services)
		if !reporter {
			continue
		}
		for _, key := range a.Services {
			ns, name, _ := strings.Cut(key, "/")
			if svc, err := c.services.Services(ns).Get(name); err == nil {
				c.recorder.Eventf(svc, v1.EventTypeWarning, EventNotAnnounced, "No node may announce %s: %s (%s)", a.IP, a.Reason, a.Code)
			}
		}
	}
	c.unannounced = current
}

type metrics struct {
	bgpAdvertised    prometheus.Gauge
	unannounced      *prometheus.GaugeVec
	announced        prometheus.Gauge
	elections        prometheus.Counter
	reconcileSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		bgpAdvertised: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pvelb_announcer_bgp_advertised_ips",
			Help: "BGP-mode IPs this node is eligible for and advertises to its BGP peers.",
		}),
		unannounced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pvelb_announcer_unannounced_ips",
			Help: "Allocated IPs no node may announce, by reason (this announcer's view of the whole cluster).",
		}, []string{"reason"}),
		announced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pvelb_announcer_announced_ips",
			Help: "IPs this node currently answers ARP/NDP for.",
		}),
		elections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pvelb_announcer_elections_total",
			Help: "Changes of an IP's elected node seen by this announcer (including first elections).",
		}),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pvelb_announcer_reconcile_duration_seconds",
			Help:    "Time to recompute the election and update the responders.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.announced, m.elections, m.reconcileSeconds, m.bgpAdvertised, m.unannounced)
	}
	return m
}
