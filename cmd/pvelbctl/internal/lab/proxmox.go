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
	"time"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/netlab"
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
	for _, v := range l.vms {
		if err := sim.AddVM(pvesim.VM{
			VMID: v.vmid, Node: v.pveHost, Name: v.host.Name, UUID: v.uuid,
			Cores: 2, Sockets: 1, MemoryMiB: 4096,
			// The VM's NIC has the MAC of the node namespace's interface, so
			// the MAC the client learns for the VIP names a Proxmox VM.
			Nets: map[int]string{0: "virtio=" + strings.ToUpper(v.host.MAC.String()) + ",bridge=vmbr0,firewall=1"},
		}); err != nil {
			return err
		}
		// A careful user runs the IP filter with the VM's own address
		// admitted: without it Proxmox drops the VM's own traffic.
		sim.SetFirewallOptions(v.vmid, true, true)
		sim.SeedIPSet(vmScope(v), vmIPSet, pve.IPSetEntry{CIDR: v.host.IPv4.Addr().String(), Comment: "node address"})
	}
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
		tw.row("%s\t%d\t%s\tvirtio=%s,bridge=vmbr0,firewall=1\tenabled, ipfilter=1\t%s",
			v.pveHost, v.vmid, v.host.Name, v.host.MAC, v.host.IPv4.Addr())
	}
	tw.print()
	l.p.say("Proxmox API: https://%s/api2/json (token %s, in the control-plane namespace)", addr, tokenID)
	return nil
}

func vmScope(v *vm) pve.Scope { return pve.VMScope(pve.VMRef{Node: v.pveHost, VMID: v.vmid}) }
