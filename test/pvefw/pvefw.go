// Package pvefw emulates a Proxmox VE host's firewall on a netlab bridge,
// from the state a pvesim simulator holds, so the lab drops what real Proxmox
// drops: above all, with the IP filter on, a VM's ARP and IP from addresses
// missing from its ipfilter-netN IPSet (the failure pvelb exists to prevent).
//
// Both implementations are emulated (Variant): pve-firewall (iptables and
// ebtables, the default) and proxmox-firewall (nftables). Compile is the pure
// part: simulator snapshot in, per-NIC decision out, following the daemons'
// sources (see the comments of compileClassic and compileNftables). Script
// renders those decisions as one nftables bridge table, and a Firewall
// applies it in the lab's switch namespace, on a loop like the daemons'.
//
// What is emulated is the IP filter, the ARP filter, the MAC filter and the
// exceptions that come before them (DHCP, ICMP errors); a VM NIC is mapped to
// the lab host whose MAC it has. Not emulated: rules and policy_in/out (all
// other traffic passes), conntrack (Proxmox accepts established and related
// flows before the IP filter, so replies from an address missing from the
// set pass there and are dropped here: this kernel has no bridge conntrack),
// the ndp/radv options, VLAN tags, aliases, host and cluster rules.
package pvefw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvesim"
)

// DefaultTable is the nftables bridge table a Firewall owns in the switch
// namespace; no other table there is touched.
const DefaultTable = "pvefw"

// Source is what the firewall reads its state from: *pvesim.Server, or a
// *pvesim.TestServer embedding one.
type Source interface {
	FirewallSnapshot() pvesim.FirewallState
}

// Options shape a Firewall.
type Options struct {
	// Variant is the implementation emulated; Classic when zero.
	Variant Variant
	// Period is how often Run re-applies the state; Variant.DefaultPeriod
	// when zero. Tests shorten it, or call ApplyNow.
	Period time.Duration
	// Table names the nftables table; DefaultTable when empty.
	Table string
	// DropInboundARP: see Config.DropInboundARP.
	DropInboundARP bool
	// Logf, when set, receives what a pass skipped (a NIC whose MAC no lab
	// host has, an unparseable entry) when that changes, and failed passes
	// of Run.
	Logf func(format string, args ...any)
}

// Firewall is the emulated firewall of one lab.
type Firewall struct {
	lab  *netlab.Lab
	src  Source
	opts Options

	mu      sync.Mutex // serialises passes
	script  string     // last applied
	skipped string     // last reported problems, to log only changes
}

// New returns a firewall for the lab that reads src; nothing is applied
// until ApplyNow or Run.
func New(lab *netlab.Lab, src Source, opts Options) *Firewall {
	if opts.Variant == 0 {
		opts.Variant = Classic
	}
	if opts.Period <= 0 {
		opts.Period = opts.Variant.DefaultPeriod()
	}
	if opts.Table == "" {
		opts.Table = DefaultTable
	}
	return &Firewall{lab: lab, src: src, opts: opts}
}

// Start is New for a test: it checks for nft (netlab.RequireTools), applies
// once, runs the loop until the test ends and then removes the table.
func Start(t testing.TB, lab *netlab.Lab, src Source, opts Options) *Firewall {
	t.Helper()
	netlab.RequireTools(t, "nft")
	f := New(lab, src, opts)
	if err := f.ApplyNow(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if err := f.Close(); err != nil {
			t.Errorf("pvefw: %v", err)
		}
	})
	return f
}

// Options returns the options in effect (defaults filled in).
func (f *Firewall) Options() Options { return f.opts }

// Run applies the state at once and then every Period until ctx ends, as the
// daemons do; a failed pass is logged and the next one tries again. It
// returns when ctx ends.
func (f *Firewall) Run(ctx context.Context) error {
	tick := time.NewTicker(f.opts.Period)
	defer tick.Stop()
	for {
		if err := f.ApplyNow(); err != nil && ctx.Err() == nil && f.opts.Logf != nil {
			f.opts.Logf("pvefw: %v", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// ApplyNow runs one pass: it reads the simulator, compiles, and replaces the
// table's rules in one nft transaction.
func (f *Firewall) ApplyNow() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	nics, problems := Compile(f.src.FirewallSnapshot(), Config{Variant: f.opts.Variant, DropInboundARP: f.opts.DropInboundARP})
	ports, unbound := bind(nics, f.lab.Hosts())
	for _, n := range unbound {
		problems = append(problems, fmt.Errorf("vm %d net%d: no lab host has MAC %s", n.VMID, n.Net, n.MAC))
	}
	// Said once, not every pass: a NIC without a lab host stays so.
	report := ""
	if err := errors.Join(problems...); err != nil {
		report = err.Error()
	}
	if report != f.skipped {
		f.skipped = report
		if report != "" && f.opts.Logf != nil {
			f.opts.Logf("pvefw: skipped: %s", report)
		}
	}
	script := Script(f.opts.Table, f.opts.Variant, ports)
	if _, err := f.nft(script, "-f", "-"); err != nil {
		return err
	}
	f.script = script
	return nil
}

// bind maps each NIC to the bridge port of the lab host with its MAC.
func bind(nics []NIC, hosts []*netlab.Host) (ports []Port, unbound []NIC) {
	for _, n := range nics {
		i := slices.IndexFunc(hosts, func(h *netlab.Host) bool { return h.MAC.String() == n.MAC.String() })
		if i < 0 {
			unbound = append(unbound, n)
			continue
		}
		ports = append(ports, Port{NIC: n, Name: hosts[i].BridgePort()})
	}
	return ports, unbound
}

// Ruleset is the script of the last successful pass ("" before the first).
func (f *Firewall) Ruleset() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.script
}

// Drops returns how many frames the firewall has dropped for the VM, to or
// from any of its NICs, since the table was created: counts survive passes,
// also passes where the VM's firewall is off. A VM never filtered has 0.
func (f *Firewall) Drops(vmid int) (uint64, error) {
	all, err := f.Counters()
	return all[vmid], err
}

// Counters returns the drop counts of every VM that has a counter.
func (f *Firewall) Counters() (map[int]uint64, error) {
	out, err := f.nft("", "-j", "list", "counters", "table", "bridge", f.opts.Table)
	if err != nil {
		return nil, err
	}
	return parseCounters(out)
}

// parseCounters reads `nft -j list counters` output: VMID -> packets.
func parseCounters(out []byte) (map[int]uint64, error) {
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets uint64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("pvefw: parsing nft counters %q: %w", out, err)
	}
	res := map[int]uint64{}
	for _, o := range doc.Nftables {
		if o.Counter == nil {
			continue
		}
		var vmid int
		if _, err := fmt.Sscanf(o.Counter.Name, "vm%d", &vmid); err == nil && CounterName(vmid) == o.Counter.Name {
			res[vmid] = o.Counter.Packets
		}
	}
	return res, nil
}

// Close removes the table, and with it every rule and counter. It does not
// stop Run (cancel its context first).
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Declaring the table first makes the delete succeed when it is absent.
	_, err := f.nft(fmt.Sprintf("table bridge %[1]s\ndelete table bridge %[1]s\n", f.opts.Table), "-f", "-")
	if err != nil && strings.Contains(err.Error(), "Cannot open network namespace") {
		return nil // the lab is gone, and the table with it
	}
	return err
}

// nft runs nft in the lab's switch namespace, with script on its stdin.
func (f *Firewall) nft(script string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", f.lab.Switch, "nft"}, args...)...)
	cmd.Stdin = strings.NewReader(script)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := fmt.Errorf("pvefw: nft %s in %s: %w: %s", strings.Join(args, " "), f.lab.Switch, err, strings.TrimSpace(stderr.String()))
		if script != "" {
			msg = fmt.Errorf("%w\nscript:\n%s", msg, script)
		}
		return nil, msg
	}
	return out, nil
}
