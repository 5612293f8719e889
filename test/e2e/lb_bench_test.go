package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/pvelb/pvelb/loadbalancer"
	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/pvesim"
)

// BenchmarkLoadBalancer creates many Services (1000 unless
// PVELB_BENCH_SERVICES says otherwise) on 10 nodes (PVELB_BENCH_NODES), with every Proxmox
// firewall write taking 20 ms, and reports: seconds until all have addresses,
// seconds until the Proxmox IPSets hold every VIP, Proxmox writes per Service,
// and writes in the steady state afterwards (which must be 0). The baseline
// runs the same harness with a LoadBalancer that does nothing.
func BenchmarkLoadBalancer(b *testing.B) {
	n := 1000
	if v := os.Getenv("PVELB_BENCH_SERVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 10000 {
			b.Fatalf("PVELB_BENCH_SERVICES=%q: want 1..10000", v)
		}
	}
	nodes := 10
	if v := os.Getenv("PVELB_BENCH_NODES"); v != "" {
		var err error
		if nodes, err = strconv.Atoi(v); err != nil || nodes < 1 || nodes > 50 {
			b.Fatalf("PVELB_BENCH_NODES=%q: want 1..50", v)
		}
	}
	for _, tc := range []struct {
		name, config string
		noop         bool
	}{
		{name: "baseline-noop", noop: true},
		{name: "pvelb-per-vip", config: "firewall:\n  resyncPeriod: 2s\n"},
		{name: "pvelb-admit-ranges", config: "firewall:\n  resyncPeriod: 2s\n  admitRanges: true\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				runLBBench(b, n, nodes, tc.config, tc.noop)
			}
		})
	}
}

func runLBBench(b *testing.B, n, nodes int, extraConfig string, noop bool) {
	b.StopTimer()
	cp := apiserver.StartT(b, apiserver.Options{})
	sim := pvesim.NewTestServer(b, pvesim.Options{WriteLatency: 20 * time.Millisecond})
	ctx := context.Background()
	client := cp.Client()
	for i := range nodes {
		vmid, ip := 201+i, fmt.Sprintf("192.0.2.%d", 101+i)
		host := fmt.Sprintf("pve%d", 1+i%3)
		uuid := fmt.Sprintf("6b7d1f4e-0c1a-4a53-9b0e-000000000%03d", vmid)
		if err := sim.AddVM(pvesim.VM{VMID: vmid, Node: host, Name: fmt.Sprintf("w%d", i), UUID: uuid, Cores: 2, Sockets: 1, MemoryMiB: 4096,
			Nets: map[int]string{0: fmt.Sprintf("virtio=BC:24:11:00:01:%02X,bridge=vmbr0,firewall=1", i)}}); err != nil {
			b.Fatal(err)
		}
		sim.SeedIPSet(pve.VMScope(pve.VMRef{Node: host, VMID: vmid}), vmSet, pve.IPSetEntry{CIDR: ip, Comment: "node address"})
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("w%d", i),
			Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": ip}},
			Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: uninitializedTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}}}}
		created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		created.Status.NodeInfo.SystemUUID = uuid
		if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	secret := filepath.Join(dir, "token")
	if err := os.WriteFile(secret, []byte(sim.TokenSecret), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg := fmt.Sprintf("clusters:\n  - region: lab\n    url: %s\n    tokenID: %q\n    tokenSecretFile: %s\n    caFile: %s\n%s",
		sim.URL, sim.TokenID, secret, sim.CAFile, extraConfig)
	cfgFile := filepath.Join(dir, "cloud.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	l := &Lab{CP: cp, Client: client, PVE: sim, ConfigFile: cfgFile}
	ApplyCRDs(b, cp)
	l.createPool(b, "bench", map[string]any{"addresses": []any{"203.0.113.0/24", "2001:db8:2::/112"}})
	if noop {
		b.Setenv(loadbalancer.NoopEnv, "1")
	}
	// The default client rate limit (20 QPS) would cap every run at the same
	// speed and hide pvelb's own cost; PVELB_BENCH_QPS=20 shows the default.
	qps := os.Getenv("PVELB_BENCH_QPS")
	if qps == "" {
		qps = "200"
	}
	l.startCCM(b, "--concurrent-service-syncs=10", "--kube-api-qps="+qps, "--kube-api-burst="+qps)
	Eventually(b, 60*time.Second, "nodes initialised", func(ctx context.Context) error {
		list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, nd := range list.Items {
			if nd.Spec.ProviderID == "" {
				return errorf("%s has no providerID", nd.Name)
			}
		}
		return nil
	})
	sim.ResetStats()

	b.StartTimer()
	start := time.Now()
	for i := range n {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("svc-%04d", i)},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "x"},
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}},
		}
		// The test apiserver's IPv4 service range is one documentation /24:
		// one Service in four of the first 1000 is IPv4, every other IPv6.
		if i%4 != 0 || i >= 1000 {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		}
		// The NodePort range holds 2768 ports.
		if i >= 2000 {
			s.Spec.AllocateLoadBalancerNodePorts = ptr(false)
		}
		if _, err := client.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	Eventually(b, 15*time.Minute, "every Service has an address", func(ctx context.Context) error {
		list, err := client.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		done := 0
		for _, s := range list.Items {
			if len(s.Status.LoadBalancer.Ingress) > 0 {
				done++
			}
		}
		if done < n {
			return errorf("%d of %d", done, n)
		}
		return nil
	})
	addressed := time.Since(start)
	if !noop {
		// Converged when the cluster set and every VM's set admit every VIP:
		// one entry per Service, or the pool's two ranges with admitRanges.
		want := n
		if strings.Contains(extraConfig, "admitRanges: true") {
			want = 2
		}
		Eventually(b, 15*time.Minute, "every VIP in every IPSet", func(context.Context) error {
			if ours, _ := l.setEntries(pve.ClusterScope, clusterSet); len(ours) < want {
				return errorf("cluster set %d entries, want %d", len(ours), want)
			}
			for i := range nodes {
				ref := pve.VMRef{Node: fmt.Sprintf("pve%d", 1+i%3), VMID: 201 + i}
				if ours, _ := l.setEntries(pve.VMScope(ref), vmSet); len(ours) < want {
					return errorf("VM %d set %d entries, want %d", ref.VMID, len(ours), want)
				}
			}
			return nil
		})
	}
	converged := time.Since(start)
	b.StopTimer()
	// Let in-flight passes finish, then measure the steady state: two resync
	// periods with nothing changing must write nothing.
	time.Sleep(3 * time.Second)
	writes := sim.Stats().Writes
	sim.ResetStats()
	time.Sleep(5 * time.Second)
	steady := sim.Stats().Writes

	b.ReportMetric(addressed.Seconds(), "s-to-addresses")
	b.ReportMetric(converged.Seconds(), "s-to-ipsets")
	b.ReportMetric(float64(writes)/float64(n), "pve-writes/service")
	b.ReportMetric(float64(steady), "steady-writes")
	if steady != 0 {
		b.Errorf("steady state wrote %d times to Proxmox, want 0", steady)
	}
}
