package announcer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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

	"github.com/pvelb/pvelb/announcer/bgp/desired"
	"github.com/pvelb/pvelb/announcer/bgp/speakerproc"
	"github.com/pvelb/pvelb/announcer/claimlog"
	"github.com/pvelb/pvelb/announcer/membership"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
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
	// ResyncPeriod is how often a full pass runs without any event, to
	// catch what an event missed (default DefaultResyncPeriod).
	ResyncPeriod time.Duration
	// Registerer receives the controller's metrics when set.
	Registerer prometheus.Registerer
	// BGP enables the embedded BGP speaker for pools in bgp mode; nil
	// leaves BGP pools unannounced by this node.
	BGP *BGPConfig
}

// DefaultResyncPeriod is Config.ResyncPeriod's default.
const DefaultResyncPeriod = 30 * time.Second

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
	// foreign records other MACs' claims on the VIPs this node answers,
	// for Status.
	foreign *claimlog.Log
	// handingOver: Handover keeps the responders answering after this node
	// left the membership, until its successors claimed (mayAnswer).
	handingOver atomic.Bool

	mu         sync.Mutex
	ready      bool
	leaving    bool
	responders map[string]*l2        // by interface
	won        map[netip.Addr]string // won IP -> interface list, for events and handover
	// claims is the election's memory: last winners and delayed claims.
	claims claimState
	// lastUnservable is what unservable last found, to log changes once;
	// written on Run's goroutine, read by Status under statusMu.
	lastUnservable []string
	statusMu       sync.Mutex
	// openFailed: interfaces whose responders could not be opened (a
	// missing capability, a socket error); unservable until a trial open
	// in checkLinks succeeds. Touched only on Run's goroutine.
	openFailed map[string]error
	// unannounced holds the reason reported for every IP nobody may
	// announce, so the Event is written once per change.
	unannounced map[netip.Addr]string

	bgp *bgpState
	// ann writes this node's ServiceAnnouncements.
	ann *announcements
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
		openFailed: map[string]error{},
		foreign:    claimlog.New(),

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
	poolInf := c.dfactory.ForResource(names.IPPools)
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
		peerInf := c.dfactory.ForResource(names.BGPPeers)
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

	// This node's own ServiceAnnouncements only (by label), in a factory of
	// their own: a cache of every node's would grow with Services x nodes
	// in BGP mode. Not in c.synced: they wait for their own cache.
	annFactory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(cfg.Dynamic, 0, metav1.NamespaceAll,
		func(o *metav1.ListOptions) {
			o.LabelSelector = names.LabelAnnouncingNode + "=" + names.NodeLabelValue(cfg.Node)
		})
	annInf := annFactory.ForResource(names.ServiceAnnouncements)
	if err := annInf.Informer().SetTransform(compactAnnouncement); err != nil {
		return nil, err
	}
	c.ann = &announcements{
		node: cfg.Node, dyn: cfg.Dynamic, factory: annFactory, cache: annInf.Informer().GetIndexer(), synced: annInf.Informer().HasSynced,
		services: c.services, nodes: c.nodes, electable: cfg.Membership.ElectableNodes,
		metric: c.metrics.vipAnnounced, kick: make(chan struct{}, 1),
	}

	c.broadcast = record.NewBroadcaster()
	c.broadcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cfg.Kube.CoreV1().Events("")})
	c.recorder = c.broadcast.NewRecorder(scheme.Scheme, v1.EventSource{Component: "pvelb-announcer", Host: cfg.Node})
	return c, nil
}

func (c *Controller) bgpInformers() []cache.SharedIndexInformer {
	if c.bgp == nil {
		return nil
	}
	return []cache.SharedIndexInformer{c.dfactory.ForResource(names.BGPPeers).Informer()}
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
		go c.runSessionStatus(ctx)
	}
	go c.ann.run(ctx)
	defer c.closeResponders()
	defer c.stopBGP(3 * time.Second)
	// A periodic pass catches anything an event missed (an interface that
	// appeared late, a responder that failed to open) without hammering.
	resync := time.NewTicker(cmp.Or(c.cfg.ResyncPeriod, DefaultResyncPeriod))
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
	gone := func(node string) bool { return !c.cfg.Membership.Electable(node) }
	d := decideClaims(c.cfg.Node, plan, c.claims, c.serving, gone, time.Now(), c.cfg.ClaimDelay)
	for _, a := range d.elected {
		c.metrics.elections.Inc()
		klog.V(2).InfoS("Election", "ip", a.IP, "winner", a.Winner, "candidates", a.Candidates, "reason", a.Reason)
	}
	for _, w := range d.delayed {
		klog.V(2).InfoS("Delaying claim until the previous owner has stopped", "ip", w.ip, "previous", w.previous, "delay", c.cfg.ClaimDelay)
	}
	if len(d.delayed) > 0 {
		time.AfterFunc(c.cfg.ClaimDelay, c.trigger)
	}
	c.claims = d.next
	c.applyL2(nodes, d.answer)
	c.ann.setL2(plan, c.won)
	if c.bgp != nil {
		c.bgp.submit(bgpInput{nodes: nodes, plan: plan, pools: pools})
	}
	c.reportUnannounced(plan)
	if !c.ready {
		c.ready = true
	}
	c.metrics.reconcileSeconds.Observe(time.Since(start).Seconds())
}

// serving reports whether this node answers ip now. Called with c.mu held.
func (c *Controller) serving(ip netip.Addr) bool {
	_, ok := c.won[ip]
	return ok
}

// Status is what this announcer does and sees, for its /status endpoint:
// whom it hears (and who hears it), and what it answers.
type Status struct {
	Membership membership.View `json:"membership"`
	// Answering maps each VIP this node answers ARP/NDP for to its
	// interfaces.
	Answering map[string]string `json:"answering"`
	// UnservablePools are the pools this node cannot answer for (an
	// interface missing or down); "" stands for addresses outside pools.
	UnservablePools []string `json:"unservablePools,omitempty"`
	// Interfaces maps each interface this node answers on to its MAC.
	Interfaces map[string]string `json:"interfaces,omitempty"`
	// ForeignClaims are other MACs' claims (ARP, NDP) on VIPs this node
	// answered, seen in the last ForeignClaimWindow: another pvelb node
	// taking over, or another responder for the VIP.
	ForeignClaims []claimlog.Claim `json:"foreignClaims,omitempty"`
}

// ForeignClaimWindow is how far back Status reports foreign claims.
const ForeignClaimWindow = 10 * time.Minute

// Status returns the current Status.
func (c *Controller) Status() Status {
	s := Status{Membership: c.cfg.Membership.View(), Answering: map[string]string{}, Interfaces: map[string]string{}}
	c.mu.Lock()
	for ip, ifs := range c.won {
		s.Answering[ip.String()] = ifs
	}
	for name, r := range c.responders {
		if r.arp != nil {
			s.Interfaces[name] = r.arp.HardwareAddr().String()
		}
	}
	c.mu.Unlock()
	s.ForeignClaims = c.foreign.Since(time.Now().Add(-ForeignClaimWindow))
	c.statusMu.Lock()
	s.UnservablePools = slices.Clone(c.lastUnservable)
	c.statusMu.Unlock()
	return s
}

// listPools reads the IPPools from the informer cache, typed.
func (c *Controller) listPools() map[string]*v1alpha1.IPPool {
	objs, _ := c.pools.List(labels.Everything())
	pools := make(map[string]*v1alpha1.IPPool, len(objs))
	for _, o := range objs {
		p, err := names.IPPool(o)
		if err != nil {
			klog.ErrorS(err, "Cannot read IPPool")
			continue
		}
		pools[p.Name] = p
	}
	return pools
}

type metrics struct {
	bgpAdvertised    prometheus.Gauge
	unannounced      *prometheus.GaugeVec
	announced        prometheus.Gauge
	elections        prometheus.Counter
	reconcileSeconds prometheus.Histogram
	vipAnnounced     *prometheus.GaugeVec
}

// RegisterMetrics registers every metric a Controller exports (the BGP
// speaker's included) with reg without building one, so tests can list what
// pvelb-announcer exports.
func RegisterMetrics(reg prometheus.Registerer) {
	newMetrics(reg)
	reg.MustRegister(bgpDescriptions{})
}

// bgpDescriptions describes the BGP collector's metrics, which bgpCollector
// leaves undescribed (it reports whatever the speaker has).
type bgpDescriptions struct{}

func (bgpDescriptions) Describe(ch chan<- *prometheus.Desc) { speakerproc.DescribeStates(ch) }
func (bgpDescriptions) Collect(chan<- prometheus.Metric)    {}

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
		vipAnnounced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pvelb_announcer_vip_announced",
			Help: "1 for each address this node announces, by mode (L2: it answers ARP/NDP; BGP: it advertises the route) and Service.",
		}, []string{"vip", "node", "mode", "namespace", "service"}),
	}
	if reg != nil {
		reg.MustRegister(m.announced, m.elections, m.reconcileSeconds, m.bgpAdvertised, m.unannounced, m.vipAnnounced)
	}
	return m
}
