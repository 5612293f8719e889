package provider_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cloudprovider "k8s.io/cloud-provider"
	cloudproviderapi "k8s.io/cloud-provider/api"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/pvelb/pvelb/provider"
	"github.com/pvelb/pvelb/test/pvesim"
)

const uuidW1 = "3f0e7a52-9b1c-4d2e-8f3a-5b6c7d8e9f01"

// simConfig starts a simulator with one VM and writes a cloud config for it
// into a fresh dir, with the token secret in a file named relatively.
func simConfig(t *testing.T) (dir, path, secret string, srv *pvesim.TestServer) {
	t.Helper()
	srv = pvesim.NewTestServer(t, pvesim.Options{})
	if err := srv.AddVM(pvesim.VM{VMID: 101, Node: "pve1", Name: "w1", UUID: uuidW1, Cores: 2, MemoryMiB: 4096}); err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(srv.TokenSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `clusters:
  - region: pve-east
    url: ` + srv.URL + `
    tokenID: "` + srv.TokenID + `"
    tokenSecretFile: token
    caFile: ` + srv.CAFile + `
    timeout: 5s
instances:
  cacheTTL: 0s
`
	path = filepath.Join(dir, "cloud.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, path, srv.TokenSecret, srv
}

func workerNode() *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1", Annotations: map[string]string{
		cloudproviderapi.AnnotationAlphaProvidedIPAddr: "192.0.2.11",
	}}}
	n.Status.NodeInfo.SystemUUID = uuidW1
	return n
}

func TestFactoryThroughRegistry(t *testing.T) {
	provider.Register()
	provider.Register() // a second call must not re-register (that exits the process)

	dir, path, _, _ := simConfig(t)
	t.Setenv(provider.ConfigDirEnv, dir)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cloud, err := cloudprovider.GetCloudProvider(provider.ProviderName, f)
	if err != nil {
		t.Fatalf("GetCloudProvider: %v", err)
	}
	if cloud.ProviderName() != "proxmox" || !cloud.HasClusterID() {
		t.Errorf("ProviderName = %q, HasClusterID = %v", cloud.ProviderName(), cloud.HasClusterID())
	}
	if _, ok := cloud.Instances(); ok {
		t.Error("Instances supported; pvelb implements only InstancesV2")
	}
	if _, ok := cloud.Zones(); ok {
		t.Error("Zones supported")
	}
	if _, ok := cloud.Routes(); ok {
		t.Error("Routes supported")
	}
	if _, ok := cloud.Clusters(); ok {
		t.Error("Clusters supported")
	}
	if lb, ok := cloud.LoadBalancer(); ok || lb != nil {
		t.Error("LoadBalancer supported before one was plugged in")
	}
	inst, ok := cloud.InstancesV2()
	if !ok {
		t.Fatal("InstancesV2 not supported")
	}
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	md, err := inst.InstanceMetadata(c, workerNode())
	if err != nil {
		t.Fatalf("InstanceMetadata: %v", err)
	}
	if md.ProviderID != "proxmox://pve-east/101" || md.Zone != "pve1" || md.InstanceType != "2VCPU-4GB" {
		t.Errorf("metadata = %+v", md)
	}

	if _, err := cloudprovider.GetCloudProvider(provider.ProviderName, nil); err == nil || !strings.Contains(err.Error(), "--cloud-config") {
		t.Errorf("nil config: err = %v", err)
	}
}

func TestBadConfigNamesFieldNotSecret(t *testing.T) {
	const secret = "6c1d2e3f-aaaa-bbbb-cccc-0123456789ab"
	doc := `clusters:
  - region: pve-east
    url: http://192.0.2.10:8006/api2/json
    tokenID: pvelb@pve!ccm
    tokenSecret: "` + secret + `"
`
	_, err := provider.NewFromReader(strings.NewReader(doc), "")
	if err == nil || !strings.Contains(err.Error(), "clusters[0].url: must be an https URL") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error leaks the secret: %v", err)
	}
}

// Proxmox request metrics land in the controller manager's legacy registry,
// which pvelb-ccm serves on /metrics.
func TestMetricsInLegacyRegistry(t *testing.T) {
	_, path, _, _ := simConfig(t)
	cloud, err := provider.NewFromFile(path)
	if err != nil {
		t.Fatalf("NewFromFile: %v", err)
	}
	inst, _ := cloud.InstancesV2()
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := inst.InstanceExists(c, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}, Spec: v1.NodeSpec{ProviderID: "proxmox://pve-east/101"}}); err != nil {
		t.Fatal(err)
	}
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range families {
		if mf.GetName() != "pvelb_proxmox_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "region" && l.GetValue() == "pve-east" && m.GetCounter().GetValue() > 0 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Error("pvelb_proxmox_requests_total{region=pve-east} not in the legacy registry")
	}
}

type testLB struct{ cloudprovider.LoadBalancer }

type testBuilder struct {
	cloudprovider.ControllerClientBuilder
}

func TestLoadBalancerHookAndInitialize(t *testing.T) {
	_, path, _, _ := simConfig(t)
	cloud, err := provider.NewFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lb := &testLB{}
	cloud.SetLoadBalancer(lb)
	if got, ok := cloud.LoadBalancer(); !ok || got != lb {
		t.Errorf("LoadBalancer() = %v, %v; want the plugged-in one", got, ok)
	}

	var calls []string
	builder := &testBuilder{}
	stop := make(chan struct{})
	cloud.OnInitialize(func(b cloudprovider.ControllerClientBuilder, s <-chan struct{}) {
		if b == builder && s == stop {
			calls = append(calls, "before")
		}
	})
	cloud.Initialize(builder, stop)
	cloud.OnInitialize(func(b cloudprovider.ControllerClientBuilder, s <-chan struct{}) {
		if b == builder && s == stop {
			calls = append(calls, "after")
		}
	})
	if strings.Join(calls, ",") != "before,after" {
		t.Errorf("hooks ran %v, want [before after]", calls)
	}
	if cloud.Client("pve-east") == nil || cloud.Client("nope") != nil {
		t.Error("Client accessor wrong")
	}
	if cloud.Config().Clusters[0].Region != "pve-east" {
		t.Error("Config() wrong")
	}
}
