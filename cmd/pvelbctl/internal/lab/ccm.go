package lab

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func (l *Lab) cloudConfig() (string, error) {
	secretFile := filepath.Join(l.dir, "proxmox-token")
	if err := os.WriteFile(secretFile, []byte(l.secret+"\n"), 0o600); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`clusters:
  - region: %s
    url: https://%s/api2/json
    tokenID: %q
    tokenSecretFile: %s
    caFile: %s
    timeout: 3s
instances:
  cacheTTL: 2s
firewall:
  enabled: true
  clusterIPSet: %s
  nics: [net0]
  resyncPeriod: %s
`, region, net.JoinHostPort(l.ctl.IPv4.Addr().String(), strconv.Itoa(pvePort)), tokenID, secretFile,
		filepath.Join(l.dir, "pve-ca.pem"), clusterIPSet, fwResync)
	path := filepath.Join(l.dir, "cloud-config.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// startCCM runs pvelb-ccm against the simulator and waits for its healthz,
// so the Node and Service steps see a working controller.
func (l *Lab) startCCM(ctx context.Context) error {
	cfgFile, err := l.cloudConfig()
	if err != nil {
		return err
	}
	kc := l.cp.Kubeconfig
	bind := l.ctl.IPv4.Addr().String()
	p, err := startInNetns(l.ctl.Netns, l.dir, "pvelb-ccm", filepath.Join(l.opts.BinDir, "pvelb-ccm"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--cloud-provider=proxmox", "--cloud-config="+cfgFile,
		"--bind-address="+bind, "--secure-port="+strconv.Itoa(ccmPort),
		"--cert-dir="+filepath.Join(l.dir, "ccm-certs"),
		"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
		"--node-monitor-period=2s", "--leader-elect=false", "--v=2")
	if err != nil {
		return err
	}
	l.ccm = p
	l.onTeardown(func() { p.stop(5 * time.Second) })
	// pvelb-ccm serves its health endpoint with a certificate it generated
	// itself into --cert-dir; this process started it in its own namespace.
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext:     l.ctl.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // own process, self-signed
	}}
	url := fmt.Sprintf("https://%s/healthz", net.JoinHostPort(bind, strconv.Itoa(ccmPort)))
	if err := p.waitOK(ctx, hc, url, 60*time.Second, "pvelb-ccm healthz"); err != nil {
		return err
	}
	l.p.say("pvelb-ccm healthy (log: %s)", p.log)
	return nil
}
