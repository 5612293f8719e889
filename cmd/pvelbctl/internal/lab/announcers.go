package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pvelb/pvelb/test/datapath"
	"github.com/pvelb/pvelb/test/netlab"
)

// startAnnouncers runs one announcer per node with a shared membership
// secret and waits until each is ready, since the Service step needs them.
func (l *Lab) startAnnouncers(ctx context.Context) error {
	secretFile := filepath.Join(l.dir, "membership-secret")
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		return err
	}
	for _, v := range l.vms {
		if err := l.startAnnouncer(v.host); err != nil {
			return err
		}
	}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: l.net.Client.DialContext}}
	for _, v := range l.vms {
		p := l.ann[v.host.Name]
		url := "http://" + net.JoinHostPort(v.host.IPv4.Addr().String(), strconv.Itoa(annPort)) + "/readyz"
		if err := p.waitOK(ctx, hc, url, 30*time.Second, "announcer on "+v.host.Name+" ready"); err != nil {
			return err
		}
	}
	l.p.say("%d announcers ready; they watch each other with authenticated UDP heartbeats on the node network", len(l.vms))
	proxies, err := l.dp.StartKubeProxies(ctx, datapath.ProxyOptions{Mode: datapath.IPTables})
	if err != nil {
		return err
	}
	for _, p := range proxies {
		l.p.say("kube-proxy on %s: mode iptables, rules synced (log: %s)", p.Node.Name, p.LogFile)
	}
	l.p.say("iptables mode, not IPVS: IPVS needs the ip_vs kernel module, which this kernel lacks")
	l.p.say("no strictARP needed: iptables/nftables kube-proxy binds no VIP to an interface, so only an announcer answers ARP for it")
	return nil
}

func (l *Lab) startAnnouncer(h *netlab.Host) error {
	p, err := startInNetns(h.Netns, l.dir, "pvelb-announcer-"+h.Name, filepath.Join(l.opts.BinDir, "pvelb-announcer"),
		"--kubeconfig="+l.cp.Kubeconfig, "--node-name="+h.Name,
		"--membership-secret-file="+filepath.Join(l.dir, "membership-secret"),
		"--metrics-bind-address="+net.JoinHostPort(h.IPv4.Addr().String(), strconv.Itoa(annPort)),
		"--v=2")
	if err != nil {
		return err
	}
	l.ann[h.Name] = p
	l.onTeardown(func() { p.stop(3 * time.Second) })
	return nil
}
