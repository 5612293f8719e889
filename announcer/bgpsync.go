package announcer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
	"github.com/pvelb/pvelb/announcer/bgp/speakerproc"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
)

// BGPConfig configures the BGP speaker, a pvelb-bgp-speaker child process.
// It starts once a BGPPeer selects this node (the Node's addresses give the
// router ID and next hops) and lives until Handover or the end of Run.
type BGPConfig struct {
	// SpeakerBinary is the pvelb-bgp-speaker executable.
	SpeakerBinary string
	// SpeakerArgs are passed to it (klog flags).
	SpeakerArgs []string
	// ListenPort accepts sessions on this TCP port; desired.NoListen (-1) opens
	// them outbound only, so the announcer never competes with Cilium's or
	// Talos's BGP for port 179.
	ListenPort int32
	// RouterID overrides the default: the node's InternalIP (IPv4), or an ID
	// derived from the node name on IPv6-only nodes.
	RouterID netip.Addr
	// LocalASN is the speaker's global AS; each BGPPeer's myASN is used for
	// its own session.
	LocalASN uint32
	// ConnectRetry between connection attempts (default desired.DefaultConnectRetry).
	ConnectRetry time.Duration
	// PasswordTTL is how long a password read from a Secret is reused
	// before it is read again (default 30s). The announcer may only get
	// named Secrets (no watch), so changes are picked up by re-reading.
	PasswordTTL time.Duration
}

// bgpState is the controller's BGP side; nil when BGP is off.
type bgpState struct {
	cfg     BGPConfig
	peers   cacheLister
	synced  cache.InformerSynced
	speaker *speakerproc.Client // nil until a BGPPeer selects this node

	// latest is the newest input from the L2 reconcile; kick wakes runBGP.
	latest atomic.Pointer[bgpInput]
	kick   chan struct{}
	// loop serialises reconcileBGP with stopBGP; stopped ends the loop's
	// work for good (Handover, end of Run).
	loop    sync.Mutex
	stopped bool

	mu        sync.Mutex
	passwords map[string]cachedPassword // "namespace/name/key"
	lastErr   string
	// advertised holds the addresses this node advertises, for Events.
	advertised map[netip.Addr]bool
}

// bgpInput is one snapshot of what the BGP side needs from a reconcile.
type bgpInput struct {
	nodes []*v1.Node
	plan  []Assignment
	pools map[string]*v1alpha1.IPPool
}

// submit hands the newest snapshot to runBGP without waiting for it.
func (b *bgpState) submit(in bgpInput) {
	b.latest.Store(&in)
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// runBGP applies the newest snapshot whenever one arrives, until ctx ends.
// Slow BGP work (starting the speaker, reading Secrets while the apiserver
// is down) only delays the next BGP pass, never the L2 election.
func (c *Controller) runBGP(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.bgp.kick:
		}
		in := c.bgp.latest.Load()
		if in == nil {
			continue
		}
		c.bgp.loop.Lock()
		if !c.bgp.stopped {
			c.reconcileBGP(ctx, in.nodes, in.plan, in.pools)
		}
		c.bgp.loop.Unlock()
	}
}

type cacheLister interface {
	List(selector labels.Selector) ([]runtime.Object, error)
}

type cachedPassword struct {
	value string
	at    time.Time
	ok    bool
}

// bgpCollector exposes the speaker's metrics from the states it last
// reported (it starts lazily, after registration).
type bgpCollector struct{ s *bgpState }

// Describe sends nothing: the collector is unchecked because its metrics
// only appear once the speaker has started.
func (bgpCollector) Describe(chan<- *prometheus.Desc) {}

func (c bgpCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	sp := c.s.speaker
	c.s.mu.Unlock()
	if sp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := sp.States(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(speakerproc.SessionUpDesc, err)
		return
	}
	speakerproc.CollectStates(ch, st)
}

// reconcileBGP makes the speaker advertise exactly the BGP-mode addresses
// this node is eligible for, to the BGPPeers that select it. Called from
// runBGP with b.loop held and not stopped, so a Handover cannot interleave.
func (c *Controller) reconcileBGP(ctx context.Context, nodes []*v1.Node, plan []Assignment, pools map[string]*v1alpha1.IPPool) {
	b := c.bgp
	if !b.synced() {
		return // until the BGPPeers are known, any change would be a guess
	}
	var self *v1.Node
	for _, n := range nodes {
		if n.Name == c.cfg.Node {
			self = n
		}
	}
	var want desired.Desired
	var errs []error
	if self != nil {
		objs, _ := b.peers.List(labels.Everything())
		all := make([]*v1alpha1.BGPPeer, 0, len(objs))
		for _, o := range objs {
			p, err := names.BGPPeer(o)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			all = append(all, p)
		}
		slices.SortFunc(all, func(a, b *v1alpha1.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
		selected, err := desired.SelectPeers(all, self.Labels)
		if err != nil {
			errs = append(errs, err)
		}
		for _, p := range selected {
			pw, err := c.bgpPassword(ctx, p)
			if err != nil {
				errs = append(errs, err)
				continue // without its password the session cannot come up
			}
			want.Peers = append(want.Peers, desired.PeerInput{Name: p.Name, Spec: p.Spec, Password: pw})
		}
		for _, a := range plan {
			if a.Mode == v1alpha1.AnnounceBGP && a.Announces(c.cfg.Node) {
				want.VIPs = append(want.VIPs, desired.VIPFromPool(a.IP, pools[a.Pool]))
			}
		}
	}
	// The speaker starts with the first BGPPeer that selects this node, so
	// ARP-only clusters carry no BGP machinery; once started it stays up
	// (with no peers and no routes when nothing is left to do).
	if b.speaker == nil {
		if self == nil || len(want.Peers) == 0 {
			b.reportErr(errors.Join(errs...))
			return
		}
		cfg := c.speakerConfig(self)
		sp, err := speakerproc.Start(ctx, speakerproc.Options{Binary: b.cfg.SpeakerBinary, Args: b.cfg.SpeakerArgs, Config: cfg})
		if err != nil {
			b.reportErr(errors.Join(append(errs, err)...))
			return
		}
		b.mu.Lock()
		b.speaker = sp
		b.mu.Unlock()
		klog.InfoS("BGP speaker started", "routerID", cfg.RouterID, "localASN", cfg.LocalASN, "listenPort", cfg.ListenPort,
			"nextHopIPv4", cfg.NextHopIPv4, "nextHopIPv6", cfg.NextHopIPv6)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.speaker.Reconcile(rctx, want); err != nil {
		errs = append(errs, err)
	}
	b.reportErr(errors.Join(errs...))
	c.metrics.bgpAdvertised.Set(float64(len(want.VIPs)))

	now := make(map[netip.Addr]bool, len(want.VIPs))
	for _, v := range want.VIPs {
		now[v.IP] = true
	}
	for _, a := range plan {
		if !now[a.IP] || b.advertised[a.IP] {
			continue
		}
		klog.InfoS("Advertising over BGP", "ip", a.IP, "services", a.Services, "peers", len(want.Peers))
		for _, key := range a.Services {
			ns, name, _ := strings.Cut(key, "/")
			if svc, err := c.services.Services(ns).Get(name); err == nil {
				c.recorder.Eventf(svc, v1.EventTypeNormal, names.EventAdvertising,
					"Node %s advertises %s over BGP (next hop: itself)", c.cfg.Node, a.IP)
			}
		}
	}
	for ip := range b.advertised {
		if !now[ip] {
			klog.InfoS("Withdrew BGP route", "ip", ip)
		}
	}
	b.advertised = now
	c.ann.setBGP(now)
}

// speakerConfig is the speaker's global configuration for this node.
func (c *Controller) speakerConfig(self *v1.Node) speakerproc.Config {
	var addrs []netip.Addr
	var nh4, nh6 netip.Addr
	for _, a := range self.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		addrs = append(addrs, ip)
		if ip.Is4() && !nh4.IsValid() {
			nh4 = ip
		}
		if ip.Is6() && ip.IsGlobalUnicast() && !nh6.IsValid() {
			nh6 = ip
		}
	}
	cfg := c.bgp.cfg
	rid := cfg.RouterID
	if !rid.IsValid() {
		rid = desired.RouterIDFor(self.Name, addrs)
	}
	return speakerproc.Config{
		RouterID:     rid,
		LocalASN:     cfg.LocalASN,
		ListenPort:   cfg.ListenPort,
		NextHopIPv4:  nh4,
		NextHopIPv6:  nh6,
		ConnectRetry: cfg.ConnectRetry,
	}
}

// bgpPassword reads the password a BGPPeer's passwordSecretRef names, from a
// cache refreshed every PasswordTTL. When a refresh fails the last good
// value is kept, so an apiserver hiccup never resets a working session.
// Neither the value nor anything derived from it is ever logged.
func (c *Controller) bgpPassword(ctx context.Context, p *v1alpha1.BGPPeer) (string, error) {
	ns, name, key, ok := desired.PasswordKey(p.Spec)
	if !ok {
		return "", nil
	}
	b := c.bgp
	id := ns + "/" + name + "/" + key
	cached, have := b.passwords[id]
	if have && cached.ok && time.Since(cached.at) < b.cfg.PasswordTTL {
		return cached.value, nil
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	field := fmt.Sprintf("BGPPeer %s: spec.passwordSecretRef", p.Name)
	var err error
	sec, gerr := c.cfg.Kube.CoreV1().Secrets(ns).Get(gctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsForbidden(gerr):
		err = fmt.Errorf("%s: may not read Secret %s/%s: pvelb-announcer reads only the Secrets named in its Role pvelb-announcer:bgp-passwords (default %s in pvelb-system)", field, ns, name, DefaultBGPPasswordSecret)
	case apierrors.IsNotFound(gerr):
		err = fmt.Errorf("%s: Secret %s/%s not found", field, ns, name)
	case gerr != nil:
		err = fmt.Errorf("%s: reading Secret %s/%s: %w", field, ns, name, gerr)
	default:
		v, found := sec.Data[key]
		switch {
		case !found:
			err = fmt.Errorf("%s: Secret %s/%s has no key %q", field, ns, name, key)
		case len(v) == 0:
			err = fmt.Errorf("%s: key %q of Secret %s/%s is empty", field, key, ns, name)
		default:
			b.passwords[id] = cachedPassword{value: string(v), at: time.Now(), ok: true}
			return string(v), nil
		}
	}
	if have && cached.ok {
		return cached.value, nil // keep the session on the last good password
	}
	return "", err
}

// DefaultBGPPasswordSecret is the Secret the shipped RBAC lets the announcer
// read BGP passwords from.
const DefaultBGPPasswordSecret = "pvelb-bgp-passwords"

// reportErr logs BGP problems when they change, not on every pass.
func (b *bgpState) reportErr(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg == b.lastErr {
		return
	}
	b.lastErr = msg
	if err != nil {
		klog.ErrorS(err, "BGP configuration problems (the valid peers and routes are in effect)")
	} else {
		klog.InfoS("BGP configuration problems resolved")
	}
}

// stopBGP withdraws every route, waits until the withdrawals are sent and
// closes the sessions, so routers drop this node's next hop at once.
func (c *Controller) stopBGP(timeout time.Duration) {
	if c.bgp == nil {
		return
	}
	// Waits for a pass in progress (bounded by its own timeouts), then
	// keeps runBGP from starting the speaker again.
	c.bgp.loop.Lock()
	c.bgp.stopped = true
	c.bgp.loop.Unlock()
	c.bgp.mu.Lock()
	sp := c.bgp.speaker
	c.bgp.mu.Unlock()
	if sp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t0 := time.Now()
	if err := sp.Stop(ctx); err != nil {
		klog.ErrorS(err, "Stopping the BGP speaker")
	}
	klog.InfoS("BGP routes withdrawn and sessions closed", "took", time.Since(t0).Round(time.Millisecond))
}
