// Package netlab builds network-namespace labs for tests, benchmarks and the
// demo: a "switch" namespace holding a Linux bridge (standing for Proxmox's
// vmbr0), node namespaces (standing for the cluster's VMs) and a client
// namespace, each joined to the bridge by a veth pair. Only documentation
// addresses are used (192.0.2.0/24 and 2001:db8:0:1::/64), and only inside the
// lab's own namespaces: nothing is added to the host's namespace.
//
// Nodes can emulate kube-proxy in IPVS mode with strictARP: a dummy interface
// kube-ipvs0 holds the VIPs, and arp_ignore=1 / arp_announce=2 keep the
// kernel from answering ARP for them, so only an announcer does.
//
// Names are short and unique per lab ("pvl<pid>-<seq>-<role>"); every lab is
// torn down in t.Cleanup, also when the test fails, and Sweep removes labs
// left by test binaries that crashed.
package netlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
)

// Prefix starts every namespace name a lab creates; Sweep matches on it.
const Prefix = "pvl"

// Addressing of every lab. Hosts get .<octet> in both families; VIPs for
// tests come from VIPRange4/VIPRange6 so they never collide with a host.
var (
	Subnet4 = netip.MustParsePrefix("192.0.2.0/24")
	Subnet6 = netip.MustParsePrefix("2001:db8:0:1::/64")
)

const (
	// LinkName is the lab interface inside every host namespace.
	LinkName = "eth0"
	// BridgeName is the bridge inside the switch namespace.
	BridgeName = "br0"
	// IPVSDummy is the interface kube-proxy's IPVS mode binds Service IPs to.
	IPVSDummy = "kube-ipvs0"
	// ClientOctet is the client's host part; nodes are 11, 12, ...
	ClientOctet = 100
	// firstVIPOctet starts the VIP range (.200-.254, ::200-::254).
	firstVIPOctet = 200
)

// VIP4 returns the i-th test VIP (0-based) in 192.0.2.200-254.
func VIP4(i int) netip.Addr { return hostAddr4(firstVIPOctet + i) }

// VIP6 returns the i-th test VIP (0-based) in 2001:db8:0:1::200-254.
func VIP6(i int) netip.Addr { return hostAddr6(firstVIPOctet + i) }

func hostAddr4(octet int) netip.Addr {
	a := Subnet4.Addr().As4()
	a[3] = byte(octet)
	return netip.AddrFrom4(a)
}

// hostAddr6 writes the octet's decimal digits as the last hextet, so host 11
// is 192.0.2.11 and 2001:db8:0:1::11 (readable side by side).
func hostAddr6(octet int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:0:1::%d", octet))
}

// Options shape a lab.
type Options struct {
	// Nodes is the number of node namespaces (node1..nodeN); default 3.
	Nodes int
	// StrictARP emulates kube-proxy IPVS strictARP on the nodes.
	StrictARP bool
}

// Lab is one bridge with its hosts.
type Lab struct {
	ID     string // "pvl<pid>-<seq>"
	Switch string // namespace holding the bridge
	Nodes  []*Host
	Client *Host

	mu      sync.Mutex
	hosts   []*Host
	closers []func() // monitors and probers, stopped before the namespaces go
	log     func(format string, args ...any)
}

// Host is one namespace on the lab bridge.
type Host struct {
	Name  string // role in the lab: node1, client, ...
	Netns string // namespace name, for `ip netns exec`
	Link  string // interface inside the namespace (eth0)
	IPv4  netip.Prefix
	IPv6  netip.Prefix
	MAC   net.HardwareAddr

	lab  *Lab
	port string // the veth end on the bridge, inside the switch namespace
}

var labSeq atomic.Int64

// New builds a lab for one test (see Build) and removes it in t.Cleanup. It
// first calls RequirePrivileged, so a test without root skips, or fails in CI.
func New(t testing.TB, opts Options) *Lab {
	t.Helper()
	RequirePrivileged(t)
	l, err := Build(opts, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// AddHost adds another namespace (a router, a control-plane host) on the
// bridge with address .<octet> in both families. Octets 11..60 belong to
// nodes, 100 to the client and 200..254 to VIPs.
func (l *Lab) AddHost(t testing.TB, name string, octet int) *Host {
	t.Helper()
	h, err := l.Add(name, octet)
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	return h
}

func (l *Lab) setupSwitch() error {
	if err := run("ip", "netns", "add", l.Switch); err != nil {
		return err
	}
	// No STP and no forwarding delay: ports forward as soon as they are up,
	// like a Proxmox vmbr0 with default settings.
	return batch(l.Switch,
		"link set lo up",
		"link add "+BridgeName+" type bridge stp_state 0 forward_delay 0",
		"link set "+BridgeName+" up",
	)
}

func (l *Lab) addHost(name string, octet int) (*Host, error) {
	if octet < 1 || octet > 254 {
		return nil, fmt.Errorf("host %s: octet %d out of 1..254", name, octet)
	}
	short := shortRole(name)
	h := &Host{
		Name:  name,
		Netns: l.ID + "-" + short,
		Link:  LinkName,
		IPv4:  netip.PrefixFrom(hostAddr4(octet), Subnet4.Bits()),
		IPv6:  netip.PrefixFrom(hostAddr6(octet), Subnet6.Bits()),
		// Locally administered, one per host, readable in `ip neigh`.
		MAC:  net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, byte(octet)},
		lab:  l,
		port: "p" + short,
	}
	if len(h.port) > 15 {
		return nil, fmt.Errorf("host %s: bridge port name %q longer than 15 characters", name, h.port)
	}
	l.mu.Lock()
	for _, o := range l.hosts {
		if o.Netns == h.Netns || o.IPv4 == h.IPv4 {
			l.mu.Unlock()
			return nil, fmt.Errorf("host %s: name or octet %d already used by %s", name, octet, o.Name)
		}
	}
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()

	if err := run("ip", "netns", "add", h.Netns); err != nil {
		return nil, err
	}
	// The veth is created inside the host namespace with its peer moved
	// straight into the switch namespace: the host's own namespace never
	// sees either end.
	if err := run("ip", "-n", h.Netns, "link", "add", h.Link, "address", h.MAC.String(),
		"type", "veth", "peer", "name", h.port, "netns", l.Switch); err != nil {
		return nil, err
	}
	if err := batch(l.Switch,
		"link set "+h.port+" master "+BridgeName,
		"link set "+h.port+" up",
	); err != nil {
		return nil, err
	}
	// nodad: duplicate address detection would hold the IPv6 address
	// tentative for a second or more; the lab's addresses are unique by
	// construction.
	if err := batch(h.Netns,
		"link set lo up",
		"addr add "+h.IPv4.String()+" dev "+h.Link,
		"addr add "+h.IPv6.String()+" dev "+h.Link+" nodad",
		"link set "+h.Link+" up",
	); err != nil {
		return nil, err
	}
	return h, nil
}

// shortRole keeps namespace and port names short: node12 -> n12, client -> c.
func shortRole(name string) string {
	if n, ok := strings.CutPrefix(name, "node"); ok {
		if _, err := strconv.Atoi(n); err == nil {
			return "n" + n
		}
	}
	if len(name) > 8 {
		return name[:8]
	}
	return name
}

// emulateStrictARP sets up what kube-proxy in IPVS mode with strictARP does.
func (h *Host) emulateStrictARP() error {
	if err := batch(h.Netns, "link add "+IPVSDummy+" type dummy"); err != nil {
		// Some kernels (minimal VM kernels) ship without the dummy driver.
		// A veth whose peer stays in the same namespace holds addresses
		// the same way: neither end is on the bridge, and arp_ignore=1 keeps
		// eth0 from answering for them exactly as with a dummy.
		if err2 := batch(h.Netns, "link add "+IPVSDummy+" type veth peer name kipvs0-peer",
			"link set kipvs0-peer up"); err2 != nil {
			return fmt.Errorf("%w; veth fallback: %w", err, err2)
		}
	}
	if err := batch(h.Netns, "link set "+IPVSDummy+" up"); err != nil {
		return err
	}
	// kube-proxy sets these on "all"; the link's own value is set too so a
	// distribution default on the interface cannot weaken them (the kernel
	// uses the larger of all/<dev> for both).
	return h.Sysctl(
		"net.ipv4.conf.all.arp_ignore=1",
		"net.ipv4.conf.all.arp_announce=2",
		"net.ipv4.conf."+h.Link+".arp_ignore=1",
		"net.ipv4.conf."+h.Link+".arp_announce=2",
	)
}

// Sysctl sets "key=value" kernel parameters inside the namespace.
func (h *Host) Sysctl(assignments ...string) error {
	return run("ip", append([]string{"netns", "exec", h.Netns, "sysctl", "-q", "-w"}, assignments...)...)
}

// AddVIP binds ip to kube-ipvs0 as kube-proxy does for a LoadBalancer IP, so
// the node accepts traffic to it (the announcer makes it reachable).
func (h *Host) AddVIP(ip netip.Addr) error {
	bits := 32
	extra := ""
	if ip.Is6() {
		bits, extra = 128, " nodad"
	}
	return batch(h.Netns, "addr replace "+netip.PrefixFrom(ip, bits).String()+" dev "+IPVSDummy+extra)
}

// DelVIP removes ip from kube-ipvs0.
func (h *Host) DelVIP(ip netip.Addr) error {
	bits := 32
	if ip.Is6() {
		bits = 128
	}
	return batch(h.Netns, "addr del "+netip.PrefixFrom(ip, bits).String()+" dev "+IPVSDummy)
}

// CutLink takes the host's cable out of the switch: its bridge port leaves
// the bridge, so no frame passes in either direction while the host itself
// still sees its interface up (like a partition, not a local link-down).
func (h *Host) CutLink() error {
	return batch(h.lab.Switch, "link set "+h.port+" nomaster")
}

// RestoreLink puts the cable back.
func (h *Host) RestoreLink() error {
	return batch(h.lab.Switch, "link set "+h.port+" master "+BridgeName)
}

// BridgePort is the name of the host's port on the lab bridge (the veth end
// in the switch namespace): the interface a Proxmox host's firewall filters
// for the VM, as it does tap<vmid>i<n>.
func (h *Host) BridgePort() string { return h.port }

// Command returns a command that runs inside the host's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Netns, name}, args...)...)
}

// Run runs a command in the namespace and returns its combined output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), h.Netns, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Ping sends one echo request to ip and waits up to timeout for the reply.
func (h *Host) Ping(ctx context.Context, ip netip.Addr, timeout time.Duration) error {
	w := max(1, int(timeout.Round(time.Second)/time.Second))
	_, err := h.Run(ctx, "ping", "-n", "-q", "-c", "1", "-W", strconv.Itoa(w), ip.String())
	return err
}

// Arping broadcasts count ARP requests for ip from the host's link, one
// every interval, and returns the distinct MACs that answered, in order of
// first reply (it waits one more interval after the last request). Unlike the
// kernel's neighbour cache it shows every answering node, so a test can
// assert that exactly one answers. It sends from a packet socket opened in
// the namespace (iputils arping in Debian 12 has no sub-second interval).
func (h *Host) Arping(ctx context.Context, ip netip.Addr, count int, interval time.Duration) ([]net.HardwareAddr, error) {
	if !ip.Is4() {
		return nil, fmt.Errorf("arping: %s is not an IPv4 address", ip)
	}
	var c *arp.Client
	if err := InNetns(h.Netns, func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	}); err != nil {
		return nil, fmt.Errorf("arping in %s: %w", h.Netns, err)
	}
	defer c.Close()
	var macs []net.HardwareAddr
	seen := map[string]bool{}
	for i := 0; i < count && ctx.Err() == nil; i++ {
		if err := c.Request(ip); err != nil {
			return macs, fmt.Errorf("arping %s in %s: %w", ip, h.Netns, err)
		}
		until := time.Now().Add(interval)
		for time.Now().Before(until) {
			_ = c.SetReadDeadline(until)
			p, _, err := c.Read()
			if err != nil {
				break // deadline: next request
			}
			if p.Operation != arp.OperationReply || p.SenderIP != ip || seen[p.SenderHardwareAddr.String()] {
				continue
			}
			seen[p.SenderHardwareAddr.String()] = true
			macs = append(macs, p.SenderHardwareAddr)
		}
	}
	return macs, ctx.Err()
}

// Neighbor is one entry of the host's neighbour cache.
type Neighbor struct {
	MAC   net.HardwareAddr // nil when incomplete/failed
	State string           // REACHABLE, STALE, FAILED, ...
}

// Neigh returns the neighbour entry for ip on the lab link (zero Neighbor and
// no error when there is none).
func (h *Host) Neigh(ctx context.Context, ip netip.Addr) (Neighbor, error) {
	out, err := h.Run(ctx, "ip", "-j", "neigh", "show", "to", ip.String(), "dev", h.Link)
	if err != nil {
		return Neighbor{}, err
	}
	var entries []struct {
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		return Neighbor{}, fmt.Errorf("parsing ip neigh output %q: %w", out, err)
	}
	if len(entries) == 0 {
		return Neighbor{}, nil
	}
	n := Neighbor{State: strings.Join(entries[0].State, ",")}
	if entries[0].LLAddr != "" {
		if n.MAC, err = net.ParseMAC(entries[0].LLAddr); err != nil {
			return Neighbor{}, err
		}
	}
	return n, nil
}

// FlushNeigh empties the host's neighbour cache on the lab link.
func (h *Host) FlushNeigh(ctx context.Context) error {
	_, err := h.Run(ctx, "ip", "neigh", "flush", "dev", h.Link)
	return err
}

// Close tears the lab down: processes still running in its namespaces are
// killed, then the namespaces (and with them every veth and the bridge) are
// deleted. It is safe to call more than once.
func (l *Lab) Close() {
	l.mu.Lock()
	hosts, closers := l.hosts, l.closers
	l.hosts, l.closers = nil, nil
	l.mu.Unlock()
	// An open socket would keep its namespace, and the lab's links, alive
	// after `ip netns del`.
	for _, c := range closers {
		c()
	}
	for _, h := range hosts {
		if err := deleteNetns(h.Netns); err != nil && l.log != nil {
			l.log("netlab: %v", err)
		}
	}
	if l.Switch != "" {
		if err := deleteNetns(l.Switch); err != nil && l.log != nil {
			l.log("netlab: %v", err)
		}
	}
}

// onClose registers fn for Close to call before it deletes the namespaces.
func (l *Lab) onClose(fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closers = append(l.closers, fn)
}

// Hosts lists every host on the lab bridge (nodes, client and hosts added
// later), in the order they were added; empty after Close.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hosts)
}

// Host returns the host with that name, or nil.
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

func deleteNetns(name string) error {
	if _, err := os.Stat(netnsDir + "/" + name); os.IsNotExist(err) {
		return nil
	}
	// A process left in the namespace would keep it (and its veth) alive
	// after `ip netns del` unmounts the name.
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = killPid(pid)
			}
		}
	}
	return run("ip", "netns", "del", name)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// batch runs several `ip` commands in one process inside a namespace.
func batch(netns string, cmds ...string) error {
	cmd := exec.Command("ip", "-n", netns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s: %q: %w: %s", netns, cmds, err, strings.TrimSpace(string(out)))
	}
	return nil
}
