package datapath

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/pvelb/pvelb/test/apiserver"
)

// ProxyMode is a kube-proxy mode this kernel can run.
type ProxyMode string

const (
	// IPTables is kube-proxy's iptables mode (through iptables-nft here).
	IPTables ProxyMode = "iptables"
	// NFTables is kube-proxy's nftables mode.
	NFTables ProxyMode = "nftables"
)

// Ports kube-proxy serves on the node's lab address.
const (
	ProxyHealthzPort = 10256
	ProxyMetricsPort = 10249
)

// ProxyOptions shape one kube-proxy.
type ProxyOptions struct {
	// Mode is IPTables or NFTables. There is no IPVS: this kernel has no
	// ip_vs (netlab's strictARP emulation stands for that mode).
	Mode ProxyMode
	// MinSyncPeriod bounds how often rules are rewritten; kube-proxy's
	// default (1s) when zero.
	MinSyncPeriod time.Duration
	// Config is merged over the generated KubeProxyConfiguration (top-level
	// keys replace the generated ones), for settings a test varies.
	Config map[string]any
}

// KubeProxy is one running kube-proxy.
type KubeProxy struct {
	Node    *Node
	Mode    ProxyMode
	LogFile string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
	once sync.Once
}

// StartKubeProxy runs the real kube-proxy inside the node's namespace (and
// only there: `ip netns exec`), against the lab's apiserver, and returns
// once it has written its rules for the first time. Stop, or the Network's
// Close, ends it.
//
// The configuration is a real node's with three changes a namespace needs:
//   - conntrack.maxPerCore and min are 0, so kube-proxy leaves
//     nf_conntrack_max alone: it cannot be written from a namespace other
//     than the host's (EINVAL), and the hashsize it would raise with it is a
//     module parameter shared by the whole machine. The conntrack timeouts
//     it sets are per namespace and stay at kube-proxy's defaults;
//   - healthz and metrics listen on the node's lab address, where the test
//     process reaches them through the lab;
//   - oomScoreAdj is 0: a test process should not get the OOM-killer
//     protection (-999) of a node's kube-proxy on a shared machine.
//
// clusterCIDR is the pod range of both families (detectLocalMode
// ClusterCIDR), so traffic from the client or another node is external and
// masqueraded under externalTrafficPolicy Cluster, as on a real node.
//
// One kube-proxy runs per node at a time. One started after another was
// stopped, in the other mode, removes the old mode's rules first, as on a
// node that changes modes.
func (n *Network) StartKubeProxy(ctx context.Context, node string, o ProxyOptions) (*KubeProxy, error) {
	p, err := n.startKubeProxy(ctx, node, o)
	if err != nil {
		return nil, err
	}
	if err := p.WaitSynced(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// StartKubeProxies is StartKubeProxy on every node added so far, started
// together and then waited for.
func (n *Network) StartKubeProxies(ctx context.Context, o ProxyOptions) ([]*KubeProxy, error) {
	var out []*KubeProxy
	for _, nd := range n.Nodes() {
		p, err := n.startKubeProxy(ctx, nd.Name, o)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	for _, p := range out {
		if err := p.WaitSynced(ctx, 60*time.Second); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (n *Network) startKubeProxy(ctx context.Context, node string, o ProxyOptions) (*KubeProxy, error) {
	nd := n.Node(node)
	if nd == nil {
		return nil, fmt.Errorf("datapath: kube-proxy: node %q was not added to the network", node)
	}
	n.mu.Lock()
	for _, p := range n.proxies {
		if p.Node == nd && p.Exited() == nil {
			n.mu.Unlock()
			return nil, fmt.Errorf("datapath: kube-proxy already runs on %s (Stop it first)", node)
		}
	}
	n.mu.Unlock()
	if o.Mode != IPTables && o.Mode != NFTables {
		return nil, fmt.Errorf("datapath: kube-proxy mode %q: only %q and %q run here (no ip_vs in this kernel)", o.Mode, IPTables, NFTables)
	}
	bin, err := n.kubeProxyBinary(ctx)
	if err != nil {
		return nil, err
	}
	addr := nd.Host.IPv4.Addr().String()
	cfg := map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"mode":               string(o.Mode),
		"hostnameOverride":   nd.Name,
		"clientConnection":   map[string]any{"kubeconfig": n.opts.Kubeconfig},
		"clusterCIDR":        ClusterCIDRs(),
		"detectLocalMode":    "ClusterCIDR",
		"healthzBindAddress": net.JoinHostPort(addr, strconv.Itoa(ProxyHealthzPort)),
		"metricsBindAddress": net.JoinHostPort(addr, strconv.Itoa(ProxyMetricsPort)),
		// NodePorts on the node's own addresses only, the recommended
		// setting (and nftables mode's default).
		"nodePortAddresses": []string{"primary"},
		"oomScoreAdj":       0,
		"conntrack":         map[string]any{"maxPerCore": 0, "min": 0},
		"logging":           map[string]any{"verbosity": 2},
	}
	if o.MinSyncPeriod > 0 {
		cfg[string(o.Mode)] = map[string]any{"minSyncPeriod": o.MinSyncPeriod.String()}
	}
	for k, v := range o.Config {
		cfg[k] = v
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.proxySeq++
	base := fmt.Sprintf("kube-proxy-%s-%d", nd.Name, n.proxySeq)
	n.mu.Unlock()
	cfgFile := filepath.Join(n.dir, base+".yaml")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		return nil, err
	}
	p := &KubeProxy{Node: nd, Mode: o.Mode, LogFile: filepath.Join(n.dir, base+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.LogFile)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command("ip", "netns", "exec", nd.Host.Netns, bin, "--config="+cfgFile)
	var out io.Writer = logf
	if n.opts.Log != nil {
		out = io.MultiWriter(logf, &prefixed{w: n.opts.Log, prefix: "[kube-proxy " + nd.Name + "] "})
	}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	// Own process group so Stop reaches whatever `ip netns exec` runs;
	// Pdeathsig so a crashed test binary leaves no kube-proxy behind (ip
	// execs kube-proxy in place, which keeps the setting).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("datapath: starting kube-proxy on %s: %w", nd.Name, err)
	}
	go func() { p.err = p.cmd.Wait(); _ = logf.Close(); close(p.done) }()

	n.mu.Lock()
	closed := n.closed
	if !closed {
		n.proxies = append(n.proxies, p)
	}
	n.mu.Unlock()
	if closed {
		p.Stop()
		return nil, fmt.Errorf("datapath: network closed")
	}
	return p, nil
}

func (n *Network) kubeProxyBinary(ctx context.Context) (string, error) {
	dir := n.opts.BinDir
	if dir == "" {
		var err error
		if dir, err = apiserver.EnsureBinaries(ctx, n.opts.Log, "kube-proxy"); err != nil {
			return "", err
		}
	}
	bin := filepath.Join(dir, "kube-proxy")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("kube-proxy binary: %w (run `make kube-bins`)", err)
	}
	return bin, nil
}

// WaitSynced waits until kube-proxy reports a completed rule sync in its
// metrics (healthz answers 200 already while it starts, before any rule).
func (p *KubeProxy) WaitSynced(ctx context.Context, timeout time.Duration) error {
	var last error
	err := waitFor(ctx, timeout, func() error {
		if err := p.Exited(); err != nil {
			return err
		}
		v, err := p.Metric(ctx, "kubeproxy_sync_proxy_rules_last_timestamp_seconds")
		if err == nil && v <= 0 {
			err = fmt.Errorf("no rule sync yet")
		}
		last = err
		return err
	})
	if err != nil {
		return fmt.Errorf("datapath: kube-proxy on %s (%s) not synced: %v; log %s:\n%s", p.Node.Name, p.Mode, last, p.LogFile, p.Tail(3000))
	}
	return nil
}

// Metric reads one unlabelled metric (the first sample of that name) from
// kube-proxy's metrics endpoint, through the node's namespace.
func (p *KubeProxy) Metric(ctx context.Context, name string) (float64, error) {
	hc := &http.Client{
		Timeout:   3 * time.Second,
		Transport: &http.Transport{DialContext: p.Node.Host.DialContext, DisableKeepAlives: true},
	}
	url := "http://" + net.JoinHostPort(p.Node.Host.IPv4.Addr().String(), strconv.Itoa(ProxyMetricsPort)) + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		return strconv.ParseFloat(f[len(f)-1], 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("metric %s not found at %s", name, url)
}

// Exited reports a kube-proxy that already died, with the end of its log.
func (p *KubeProxy) Exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("kube-proxy on %s exited (%v): %s", p.Node.Name, p.err, p.Tail(3000))
	default:
		return nil
	}
}

// Tail returns the last n bytes of the log.
func (p *KubeProxy) Tail(n int) string {
	b, err := os.ReadFile(p.LogFile)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Stop ends kube-proxy (SIGTERM, then SIGKILL after 5 s) and waits for it.
// Its rules stay in the node's namespace, as on a node whose kube-proxy
// stopped; they go with the namespace. Safe to call more than once.
func (p *KubeProxy) Stop() {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	})
}

type prefixed struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

func (l *prefixed) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			_, _ = io.WriteString(l.w, l.prefix+line)
		}
	}
	return len(b), nil
}
