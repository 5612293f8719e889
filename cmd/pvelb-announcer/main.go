// Command pvelb-announcer runs on every node (a DaemonSet on the host
// network) and makes the VIPs pvelb allocated reachable: it elects one node
// per ARP-mode IP among the live eligible announcers, and the winner answers
// ARP (IPv4) and NDP (IPv6) for it. Announcers see each other over the node
// network with authenticated UDP heartbeats, so failover does not wait for,
// or depend on, the API server. For BGP-mode pools every eligible node
// advertises the VIPs with itself as next hop through a speaker that opens
// sessions outbound only unless --bgp-listen-port is set. The speaker is
// gobgp in a child process, pvelb-bgp-speaker, started only once a BGPPeer
// selects the node, so ARP-only nodes never map it.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/announcer"
	"github.com/pvelb/pvelb/announcer/arp"
	"github.com/pvelb/pvelb/announcer/bgp/desired"
	"github.com/pvelb/pvelb/announcer/membership"
	"github.com/pvelb/pvelb/announcer/ndp"
	"github.com/pvelb/pvelb/cmd/internal/buildinfo"
)

type options struct {
	kubeconfig         string
	nodeName           string
	iface              string
	membershipPort     int
	membershipBind     string
	secretFile         string
	secretReload       time.Duration
	interval           time.Duration
	deadAfter          time.Duration
	maxSkew            time.Duration
	restartGrace       time.Duration
	metricsBindAddress string
	handoverTimeout    time.Duration
	resyncPeriod       time.Duration
	bgpListenPort      int32
	bgpRouterID        string
	bgpLocalASN        uint32
	bgpConnectRetry    time.Duration
	bgpSpeakerBinary   string
	klogFlags          *flag.FlagSet
	version            bool
}

func (o *options) flags() *cliflag.NamedFlagSets {
	var fss cliflag.NamedFlagSets
	fs := fss.FlagSet("announcer")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to a kubeconfig; in-cluster configuration when empty.")
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "This node's name (default: $NODE_NAME from the downward API).")
	fs.StringVar(&o.iface, "interface", "", "Interface to answer ARP/NDP on for pools that name none (default: the interface holding the node's InternalIP).")
	fs.StringVar(&o.metricsBindAddress, "metrics-bind-address", ":7948", "Address for /metrics, /healthz and /readyz; \"0\" disables.")
	fs.DurationVar(&o.handoverTimeout, "handover-timeout", time.Second, "On SIGTERM of a node that goes (deleted, cordoned, excluded, NotReady), how long to keep answering until successors have claimed this node's VIPs.")
	fs.DurationVar(&o.resyncPeriod, "resync-period", announcer.DefaultResyncPeriod, "How often a full pass runs with no event, to catch anything an event missed; it writes nothing when nothing changed.")
	fs.BoolVar(&o.version, "version", false, "Print the version and commit and exit.")
	ms := fss.FlagSet("membership")
	ms.IntVar(&o.membershipPort, "membership-port", membership.DefaultPort, "UDP port of the announcers' heartbeats (same on every node).")
	ms.StringVar(&o.membershipBind, "membership-bind-address", "", "Local address for heartbeats (default: all addresses).")
	ms.StringVar(&o.secretFile, "membership-secret-file", "", "File holding the shared secret that authenticates heartbeats (a mounted Secret key, at least 16 bytes). Required. One secret per line: the first signs, all are accepted, and the file is re-read every 10s, so a secret is rotated without a restart (docs/install.md).")
	ms.DurationVar(&o.secretReload, "membership-secret-reload-interval", 10*time.Second, "How often the membership secret file is re-read (the kubelet refreshes a mounted Secret within about a minute).")
	ms.DurationVar(&o.interval, "membership-interval", membership.DefaultInterval, "Heartbeat interval.")
	ms.DurationVar(&o.deadAfter, "membership-dead-after", membership.DefaultDeadAfter, "Silence after which a peer is dead.")
	ms.DurationVar(&o.maxSkew, "membership-max-clock-skew", membership.DefaultMaxSkew, "Largest accepted difference between a heartbeat's timestamp and the local clock (replay window).")
	ms.DurationVar(&o.restartGrace, "membership-restart-grace", membership.DefaultRestartGrace, "On SIGTERM of a node that stays (a DaemonSet rollout), its VIPs stay on it while its announcer restarts, for at most this long in its peers' view, so established connections survive; 0 hands them over and takes them back instead (two moves).")
	bs := fss.FlagSet("bgp")
	bs.Int32Var(&o.bgpListenPort, "bgp-listen-port", desired.NoListen, "TCP port to accept BGP sessions on; -1 opens sessions outbound only and listens nowhere, so the announcer never competes with Cilium's or Talos's BGP for port 179. A port below 1024 needs the NET_BIND_SERVICE capability.")
	bs.StringVar(&o.bgpRouterID, "bgp-router-id", "", "BGP router ID, an IPv4 address (default: the node's InternalIP; derived from the node name on IPv6-only nodes).")
	bs.Uint32Var(&o.bgpLocalASN, "bgp-local-asn", 64512, "The speaker's global AS number; every BGPPeer's spec.myASN is used for its own session.")
	bs.DurationVar(&o.bgpConnectRetry, "bgp-connect-retry", desired.DefaultConnectRetry, "Pause between BGP connection attempts and after a session drops.")
	bs.StringVar(&o.bgpSpeakerBinary, "bgp-speaker-binary", "", "The pvelb-bgp-speaker executable the announcer runs as a child process once a BGPPeer selects this node (default: pvelb-bgp-speaker in the directory of this executable).")
	gfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(gfs)
	o.klogFlags = gfs
	fss.FlagSet("logging").AddGoFlagSet(gfs)
	return &fss
}

// defaultGCPercent is the announcer's GOGC unless the environment sets one.
// Its live heap is a few MiB of informer caches and announcement state that
// change seldom, so collecting at 50% growth instead of Go's 100% costs
// little CPU and keeps about 6 MiB less resident with 1000 VIPs
// (docs/benchmarks.md, "Memory with 1000 VIPs"): the announcer runs on
// every node, where memory is the scarcer resource.
const defaultGCPercent = 50

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	o := &options{}
	fss := o.flags()
	fs := pflag.NewFlagSet("pvelb-announcer", pflag.ContinueOnError)
	for _, f := range fss.FlagSets {
		fs.AddFlagSet(f)
	}
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage of pvelb-announcer:\n")
		cliflag.PrintSections(os.Stderr, *fss, 100)
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if o.version {
		fmt.Println(buildinfo.String("pvelb-announcer"))
		return
	}
	if err := run(o); err != nil {
		klog.ErrorS(err, "pvelb-announcer failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func (o *options) validate() error {
	if o.nodeName == "" {
		return errors.New("--node-name: required (or set NODE_NAME through the downward API)")
	}
	if o.secretFile == "" {
		return errors.New("--membership-secret-file: required")
	}
	if o.membershipPort < 1 || o.membershipPort > 65535 {
		return fmt.Errorf("--membership-port: %d out of 1..65535", o.membershipPort)
	}
	if o.secretReload < 100*time.Millisecond {
		return fmt.Errorf("--membership-secret-reload-interval: %s: must be at least 100ms", o.secretReload)
	}
	if o.deadAfter <= o.interval {
		return fmt.Errorf("--membership-dead-after (%s) must exceed --membership-interval (%s)", o.deadAfter, o.interval)
	}
	if o.bgpListenPort != desired.NoListen && (o.bgpListenPort < 1 || o.bgpListenPort > 65535) {
		return fmt.Errorf("--bgp-listen-port: %d: must be -1 (no listener) or 1-65535", o.bgpListenPort)
	}
	if o.bgpLocalASN == 0 {
		return errors.New("--bgp-local-asn: must be 1-4294967295")
	}
	if o.resyncPeriod < time.Second {
		return fmt.Errorf("--resync-period: %s: must be at least 1s", o.resyncPeriod)
	}
	if o.bgpConnectRetry < time.Second {
		return fmt.Errorf("--bgp-connect-retry: %s: must be at least 1s", o.bgpConnectRetry)
	}
	if _, err := o.routerID(); err != nil {
		return err
	}
	return nil
}

func (o *options) routerID() (netip.Addr, error) {
	if o.bgpRouterID == "" {
		return netip.Addr{}, nil
	}
	ip, err := netip.ParseAddr(o.bgpRouterID)
	if err != nil || !ip.Is4() || ip.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("--bgp-router-id: %q: must be a non-zero IPv4 address", o.bgpRouterID)
	}
	return ip, nil
}

func (o *options) bgpConfig() (*announcer.BGPConfig, error) {
	rid, _ := o.routerID() // checked by validate
	bin := o.bgpSpeakerBinary
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("--bgp-speaker-binary: locating this executable to find pvelb-bgp-speaker beside it: %w", err)
		}
		bin = filepath.Join(filepath.Dir(self), "pvelb-bgp-speaker")
	}
	// Checked now, not when a BGPPeer first appears, so a broken image
	// fails at start where it is noticed.
	if st, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("--bgp-speaker-binary: %w", err)
	} else if st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("--bgp-speaker-binary: %s is not an executable file", bin)
	}
	var args []string
	if o.klogFlags != nil {
		// The child logs to the same stderr at the same verbosity.
		if v := o.klogFlags.Lookup("v"); v != nil {
			args = append(args, "-v="+v.Value.String())
		}
	}
	return &announcer.BGPConfig{
		SpeakerBinary: bin,
		SpeakerArgs:   args,
		ListenPort:    o.bgpListenPort,
		RouterID:      rid,
		LocalASN:      o.bgpLocalASN,
		ConnectRetry:  o.bgpConnectRetry,
	}, nil
}

func run(o *options) error {
	if err := o.validate(); err != nil {
		return err
	}
	secrets, err := membership.LoadSecrets(o.secretFile)
	if err != nil {
		return fmt.Errorf("--membership-secret-file: %w", err)
	}
	var cfg *rest.Config
	if o.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.UserAgent = "pvelb-announcer/" + o.nodeName
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	arp.MustRegister(reg)
	ndp.MustRegister(reg)

	m, err := membership.New(membership.Config{
		Node:      o.nodeName,
		Listen:    net.JoinHostPort(o.membershipBind, strconv.Itoa(o.membershipPort)),
		Secrets:   secrets,
		Interval:  o.interval,
		DeadAfter: o.deadAfter,
		MaxSkew:   o.maxSkew,
		// 0 on the command line turns restarts in place off everywhere:
		// receivers then treat Restarting as Leaving.
		RestartGrace: cmp.Or(o.restartGrace, -1),
		Registerer:   reg,
	})
	if err != nil {
		return err
	}
	bgpCfg, err := o.bgpConfig()
	if err != nil {
		return err
	}
	ctrl, err := announcer.New(announcer.Config{
		Node:            o.nodeName,
		Kube:            kube,
		Dynamic:         dyn,
		Membership:      m,
		MembershipPort:  o.membershipPort,
		Interface:       o.iface,
		HandoverTimeout: o.handoverTimeout,
		ResyncPeriod:    o.resyncPeriod,
		RestartInPlace:  o.restartGrace > 0,
		ClaimDelay:      o.interval / 2,
		Registerer:      reg,
		BGP:             bgpCfg,
	})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if o.metricsBindAddress != "0" && o.metricsBindAddress != "" {
		if err := serveHTTP(ctx, o.metricsBindAddress, reg, ctrl); err != nil {
			return err
		}
	}
	memDone := make(chan struct{})
	go func() { defer close(memDone); _ = m.Run(ctx) }()
	go reloadSecrets(ctx, o.secretFile, m, o.secretReload)
	ctrlDone := make(chan error, 1)
	go func() { ctrlDone <- ctrl.Run(ctx) }()
	klog.InfoS("pvelb-announcer started", "node", o.nodeName, "membershipPort", o.membershipPort)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-sigs:
		klog.InfoS("Stopping", "signal", sig.String())
		ctrl.Stop()
	case err := <-ctrlDone:
		cancel()
		<-memDone
		return err
	}
	cancel()
	<-memDone
	return <-ctrlDone
}

// reloadSecrets re-reads the secret file every interval and hands changes
// to the membership. A file that became unreadable or invalid keeps the
// secrets in use (and says so), so a bad edit cannot split the cluster.
func reloadSecrets(ctx context.Context, path string, m *membership.Membership, interval time.Duration) {
	last, _ := os.ReadFile(path)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Equal(b, last) {
			continue
		}
		secrets, err := membership.LoadSecrets(path)
		if err == nil {
			err = m.SetSecrets(secrets)
		}
		if err != nil {
			klog.ErrorS(err, "Membership secret file changed but cannot be used; keeping the secrets in use")
			last = b
			continue
		}
		last = b
		klog.InfoS("Membership secrets reloaded", "secrets", len(secrets))
	}
}

func serveHTTP(ctx context.Context, addr string, reg *prometheus.Registry, ctrl *announcer.Controller) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ctrl.Ready() {
			http.Error(w, "informer caches not synced yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	// Whom this node hears and what it answers, for operators and
	// `pvelbctl doctor`; no secrets in it.
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ctrl.Status())
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-bind-address: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
	}()
	klog.InfoS("Serving metrics and health", "address", l.Addr().String())
	return nil
}
