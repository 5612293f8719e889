package lab

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/datapath"
	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvefw"
	"github.com/pvelb/pvelb/test/pvesim"
)

// startProxmox serves the Proxmox simulator over TLS in the control-plane
// namespace with one VM per node, their IP filters already on.
func (l *Lab) startProxmox(ctx context.Context) error {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	l.secret = hex.EncodeToString(b)
	sim, err := pvesim.New(pvesim.Options{SchemaFile: l.opts.SchemaFile, Tokens: []pvesim.Token{{ID: tokenID, Secret: l.secret}}})
	if err != nil {
		return err
	}
	l.sim = sim
	for i, v := range l.vms {
		if err := sim.AddVM(pvesim.VM{
			VMID: v.vmid, Node: v.pveHost, Name: v.host.Name, UUID: v.uuid,
			Cores: 2, Sockets: 1, MemoryMiB: 4096,
			// The VM's NIC has the MAC of the node namespace's interface, so
			// the MAC the client learns for the VIP names a Proxmox VM.
			Nets: map[int]string{0: "virtio=" + strings.ToUpper(v.host.MAC.String()) + ",bridge=vmbr0,firewall=1"},
		}); err != nil {
			return err
		}
		// A careful user runs the IP filter with the VM's own addresses
		// admitted: without them Proxmox drops the VM's own traffic. The
		// pod CIDRs too: a host-gateway CNI routes pod traffic between
		// nodes unencapsulated, from the pods' addresses.
		sim.SetFirewallOptions(v.vmid, true, true)
		// The VM firewall is on for the IP filter only: inbound traffic
		// (the apiserver, pods, the announcers' heartbeats) is let in, as
		// the lab's emulated firewall does; a VM's default policy_in is
		// DROP, which pvelbctl doctor would flag.
		sim.SetVMFirewallOption(v.vmid, "policy_in", "ACCEPT")
		pod4, pod6, err := datapath.NodePodCIDRs(i + 1)
		if err != nil {
			return err
		}
		sim.SeedIPSet(vmScope(v), vmIPSet,
			pve.IPSetEntry{CIDR: v.host.IPv4.Addr().String(), Comment: "node address"},
			pve.IPSetEntry{CIDR: v.host.IPv6.Addr().String(), Comment: "node address"},
			pve.IPSetEntry{CIDR: pod4.String(), Comment: "pod CIDR (host-gateway CNI)"},
			pve.IPSetEntry{CIDR: pod6.String(), Comment: "pod CIDR (host-gateway CNI)"})
	}
	// Neither Proxmox firewall daemon filters anything while the
	// datacenter firewall is off.
	sim.SetClusterFirewall(true)
	addr := net.JoinHostPort(l.ctl.IPv4.Addr().String(), strconv.Itoa(pvePort))
	cert, caPEM, err := pvesim.SelfSignedTLS(l.ctl.IPv4.Addr().String())
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.dir, "pve-ca.pem"), caPEM, 0o644); err != nil {
		return err
	}
	var ln net.Listener
	if err := netlab.InNetns(l.ctl.Netns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return fmt.Errorf("listening for the Proxmox API in %s: %w", l.ctl.Netns, err)
	}
	l.simSrv = &http.Server{
		Handler:           sim,
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/1.1 only, as the simulator's standalone command does.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = l.simSrv.ServeTLS(ln, "", "") }()
	l.onTeardown(func() { _ = l.simSrv.Close() })

	tw := l.table()
	tw.row("PROXMOX HOST\tVMID\tNAME\tNET0\tFIREWALL\tipfilter-net0")
	for _, v := range l.vms {
		var cidrs []string
		for _, e := range sim.IPSetEntries(vmScope(v), vmIPSet) {
			cidrs = append(cidrs, e.CIDR)
		}
		tw.row("%s\t%d\t%s\tvirtio=%s,bridge=vmbr0,firewall=1\tenabled, ipfilter=1\t%s",
			v.pveHost, v.vmid, v.host.Name, v.host.MAC, strings.Join(cidrs, " "))
	}
	tw.print()
	l.p.say("Proxmox API: https://%s/api2/json (token %s, in the control-plane namespace)", addr, tokenID)
	return l.startFirewall(ctx)
}

// fwPeriod is how often the emulated firewall applies the simulator's state.
// pve-firewall does it every 10 s; the demo would spend most of its time
// waiting for that, so it runs ten times as often and says so.
const fwPeriod = time.Second

// startFirewall runs the emulated Proxmox firewall (pve-firewall's IP and
// ARP filters, as nftables rules on the lab bridge) from the simulator's
// state, so what pvelb writes to Proxmox, or fails to, decides whether the
// client's traffic passes.
func (l *Lab) startFirewall(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(l.dir, "pvefw.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	fw := pvefw.New(l.net, l.sim, pvefw.Options{Variant: pvefw.Classic, Period: fwPeriod, Logf: func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(logf, "%s %s\n", time.Now().Format(time.RFC3339Nano), fmt.Sprintf(f, a...))
	}})
	if err := fw.ApplyNow(); err != nil {
		_ = logf.Close()
		return err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); _ = fw.Run(rctx) }()
	l.fw = fw
	l.onTeardown(func() {
		cancel()
		<-done
		_ = fw.Close()
		_ = logf.Close()
	})
	l.p.say("Proxmox firewall emulated on vmbr0 (pve-firewall's IP and ARP filters as nftables rules in the bridge's namespace):")
	l.p.say("it applies the simulator's state every %s here; real Proxmox applies changes every ~10 s", fwPeriod)
	return nil
}

func vmScope(v *vm) pve.Scope { return pve.VMScope(pve.VMRef{Node: v.pveHost, VMID: v.vmid}) }
