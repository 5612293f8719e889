package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/provider/pve"
)

// TestCCMProxmoxDayTwo drives the real pvelb-ccm binary through what a
// Proxmox cluster does after day one:
//   - its first API host is down: pvelb-ccm initialises every Node through
//     the second of its urls and reports the first down in its metrics;
//   - a Node registered by Cluster API Proxmox (providerID proxmox://<uuid>)
//     is initialised like the others;
//   - Talos's control-plane VIP, named in firewall.extraAddresses, is
//     admitted in the control-plane VM's ipfilter-net0 and listed in the
//     cluster set, marked as pvelb's, and in no worker's;
//   - VMs are live-migrated (qm migrate through the simulator's API): the
//     zone and pvelb.io/proxmox-host labels follow, the other Nodes' stay,
//     and the VIP stays admitted.
func TestCCMProxmoxDayTwo(t *testing.T) {
	l := newLab(t)
	const capiUUID = "6b7d1f4e-0c1a-4a53-9b0e-000000000104"
	capi := labVM{104, "pve2", "capi-w-1", capiUUID, "192.0.2.14"}
	addVM(t, l.PVE, capi)
	l.PVE.SetHostOnline("pve3", true)
	down, up := l.PVE.AddEndpoint(t), l.PVE.AddEndpoint(t)
	down.Stop()

	dir := t.TempDir()
	secret := filepath.Join(dir, "token")
	if err := os.WriteFile(secret, []byte(l.PVE.TokenSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`clusters:
  - region: lab
    urls: [%s, %s]
    tokenID: %q
    tokenSecretFile: %s
    caFile: %s
    timeout: 2s
instances:
  cacheTTL: 1s
  labelSyncPeriod: 1s
firewall:
  resyncPeriod: 1s
  extraAddresses:
    - name: talos-vip
      addresses: [192.0.2.5]
      nodeSelector: node-role.kubernetes.io/control-plane
`, down.URL, up.URL, l.PVE.TokenID, secret, l.PVE.CAFile)
	if err := os.WriteFile(l.ConfigFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ApplyCRDs(t, l.CP) // the LoadBalancer side, which admits extra addresses, needs them
	l.createNodes(t)
	l.createNode(t, capi)
	nodes := l.Client.CoreV1().Nodes()
	// The kubelet of a Cluster API Machine registers with --provider-id.
	n, err := nodes.Get(context.Background(), capi.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.ProviderID = "proxmox://" + capiUUID
	if _, err := nodes.Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	cpNode, err := nodes.Get(context.Background(), "talos-cp-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cpNode.Labels = map[string]string{"node-role.kubernetes.io/control-plane": ""}
	if _, err := nodes.Update(context.Background(), cpNode, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, vm := range append(labVMs, capi) {
		l.PVE.SetFirewallOptions(vm.vmid, true, true)
		l.PVE.SeedIPSet(pve.VMScope(pve.VMRef{Node: vm.host, VMID: vm.vmid}), vmSet, pve.IPSetEntry{CIDR: vm.ip, Comment: "node address"})
	}
	_, port := l.startCCM(t)

	hostLabels := func(name, want string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			n, err := nodes.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if hasTaint(n, uninitializedTaint) {
				return errorf("not initialised")
			}
			for _, k := range []string{corev1.LabelTopologyZone, corev1.LabelFailureDomainBetaZone, "pvelb.io/proxmox-host"} {
				if got := n.Labels[k]; got != want {
					return errorf("label %s=%q, want %q", k, got, want)
				}
			}
			return nil
		}
	}
	for _, vm := range append(labVMs, capi) {
		Eventually(t, 30*time.Second, vm.name+" initialised through the second API host", hostLabels(vm.name, vm.host))
	}
	if n, err := nodes.Get(context.Background(), capi.name, metav1.GetOptions{}); err != nil || n.Spec.ProviderID != "proxmox://"+capiUUID {
		t.Fatalf("Cluster API Node: %v; providerID must stay proxmox://%s", err, capiUUID)
	}

	metrics := func() string {
		hc := &http.Client{Timeout: 2 * time.Second, Transport: insecureLoopback()}
		resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/metrics", port))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m := metrics()
	for _, want := range []string{
		fmt.Sprintf(`pvelb_proxmox_api_endpoint_up{region="lab",url=%q} 0`, strings.TrimSuffix(down.URL, "/api2/json")),
		fmt.Sprintf(`pvelb_proxmox_api_endpoint_up{region="lab",url=%q} 1`, strings.TrimSuffix(up.URL, "/api2/json")),
	} {
		if !strings.Contains(m, want) {
			t.Errorf("pvelb-ccm metrics lack %s", want)
		}
	}

	talosVIP := func(host string) func(ctx context.Context) error {
		return func(context.Context) error {
			var in []string
			for _, e := range l.PVE.IPSetEntries(pve.VMScope(pve.VMRef{Node: host, VMID: 101}), vmSet) {
				if e.CIDR == "192.0.2.5" {
					in = append(in, e.Comment)
				}
			}
			if len(in) != 1 || !strings.HasPrefix(in[0], "pvelb:") || !strings.Contains(in[0], "extraAddresses/talos-vip") {
				return errorf("talos-cp-1's %s holds 192.0.2.5 with comments %q; want one pvelb entry naming extraAddresses/talos-vip", vmSet, in)
			}
			for _, e := range l.PVE.IPSetEntries(pve.ClusterScope, clusterSet) {
				if e.CIDR == "192.0.2.5" {
					return nil
				}
			}
			return errorf("cluster set %s lacks 192.0.2.5", clusterSet)
		}
	}
	Eventually(t, 20*time.Second, "Talos VIP admitted in the control-plane VM", talosVIP("pve1"))
	for _, vm := range append(labVMs[1:], capi) {
		for _, e := range l.PVE.IPSetEntries(pve.VMScope(pve.VMRef{Node: vm.host, VMID: vm.vmid}), vmSet) {
			if e.CIDR == "192.0.2.5" {
				t.Errorf("worker %s admits the control-plane VIP", vm.name)
			}
		}
	}

	// Live migrations, as an operator (or HA) does them.
	start := time.Now()
	if err := l.PVE.Migrate(101, "pve1", "pve2"); err != nil {
		t.Fatal(err)
	}
	if err := l.PVE.Migrate(104, "pve2", "pve3"); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 15*time.Second, "talos-cp-1 labels follow its VM to pve2", hostLabels("talos-cp-1", "pve2"))
	Eventually(t, 15*time.Second, "capi-w-1 labels follow its VM to pve3", hostLabels("capi-w-1", "pve3"))
	if err := talosVIP("pve2")(context.Background()); err != nil {
		t.Errorf("after the migration: %v", err)
	}
	t.Logf("labels followed both migrations %v after them (labelSyncPeriod 1s)", time.Since(start).Round(100*time.Millisecond))
	// And stay: the cloud node controller copies the deprecated zone label
	// over the topology one, so a half-moved zone would flip back.
	Consistently(t, 3*time.Second, "migrated Nodes' labels", func(ctx context.Context) error {
		if err := hostLabels("talos-cp-1", "pve2")(ctx); err != nil {
			return err
		}
		return hostLabels("capi-w-1", "pve3")(ctx)
	})
	for _, vm := range labVMs[1:] {
		if err := hostLabels(vm.name, vm.host)(context.Background()); err != nil {
			t.Errorf("%s, not migrated: %v", vm.name, err)
		}
	}
}
