package instances

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/pvelb/pvelb/provider/pve"
)

// fakeClient is a minimal in-memory pve.Client for unit tests of this
// package's logic; the integration test uses the real client and simulator.
type fakeClient struct {
	mu       sync.Mutex
	vms      []pve.VMResource
	configs  map[int]*pve.VMConfig
	agent    map[int][]pve.AgentInterface
	listErr  error
	cfgErr   map[int]error
	agentErr error
	// gate, when set, blocks every ClusterVMs/VMConfig call until closed.
	gate chan struct{}

	listCalls   int
	configCalls map[int]int
	agentCalls  int
}

func newFake() *fakeClient {
	return &fakeClient{configs: map[int]*pve.VMConfig{}, agent: map[int][]pve.AgentInterface{}, cfgErr: map[int]error{}, configCalls: map[int]int{}}
}

// addVM adds a running QEMU VM with the given uuid.
func (f *fakeClient) addVM(vmid int, node, name, uuid string) *fakeClient {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vms = append(f.vms, pve.VMResource{VMID: vmid, Node: node, Name: name, Type: "qemu", Status: "running", MaxCPU: 2, MaxMem: 4 << 30})
	f.configs[vmid] = &pve.VMConfig{Name: name, SMBIOS1: "uuid=" + uuid, Cores: 2, Sockets: 1, Memory: 4096}
	return f
}

func (f *fakeClient) setStatus(vmid int, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.vms {
		if f.vms[k].VMID == vmid {
			f.vms[k].Status = status
		}
	}
}

func (f *fakeClient) remove(vmid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.vms {
		if f.vms[k].VMID == vmid {
			f.vms = append(f.vms[:k], f.vms[k+1:]...)
			break
		}
	}
	delete(f.configs, vmid)
}

func (f *fakeClient) wait(ctx context.Context) error {
	f.mu.Lock()
	g := f.gate
	f.mu.Unlock()
	if g == nil {
		return nil
	}
	select {
	case <-g:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeClient) Version(context.Context) (string, error) { return "9.1.3", nil }

func (f *fakeClient) Permissions(context.Context, string, string) (map[string]bool, error) {
	return nil, nil
}

func (f *fakeClient) ClusterVMs(ctx context.Context) ([]pve.VMResource, error) {
	f.mu.Lock()
	f.listCalls++
	f.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	return append([]pve.VMResource(nil), f.vms...), nil
}

func (f *fakeClient) VMConfig(ctx context.Context, vm pve.VMRef) (*pve.VMConfig, error) {
	f.mu.Lock()
	f.configCalls[vm.VMID]++
	f.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.cfgErr[vm.VMID]; err != nil {
		return nil, err
	}
	c, ok := f.configs[vm.VMID]
	if !ok {
		return nil, &pve.Error{Method: "GET", Path: fmt.Sprintf("/nodes/%s/qemu/%d/config", vm.Node, vm.VMID), StatusCode: 500,
			Reason: fmt.Sprintf("Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", vm.Node, vm.VMID)}
	}
	cp := *c
	return &cp, nil
}

func (f *fakeClient) VMStatus(context.Context, pve.VMRef) (*pve.VMStatus, error) {
	return nil, fmt.Errorf("not used")
}

func (f *fakeClient) AgentInterfaces(_ context.Context, vm pve.VMRef) ([]pve.AgentInterface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agentCalls++
	if f.agentErr != nil {
		return nil, f.agentErr
	}
	return f.agent[vm.VMID], nil
}

func (f *fakeClient) VMFirewallOptions(context.Context, pve.VMRef) (*pve.FirewallOptions, error) {
	return nil, fmt.Errorf("not used")
}
func (f *fakeClient) IPSets(context.Context, pve.Scope) ([]pve.IPSet, error) {
	return nil, fmt.Errorf("not used")
}
func (f *fakeClient) CreateIPSet(context.Context, pve.Scope, string, string) error {
	return fmt.Errorf("not used")
}
func (f *fakeClient) IPSetEntries(context.Context, pve.Scope, string) ([]pve.IPSetEntry, error) {
	return nil, fmt.Errorf("not used")
}
func (f *fakeClient) AddIPSetEntry(context.Context, pve.Scope, string, pve.IPSetEntry) error {
	return fmt.Errorf("not used")
}
func (f *fakeClient) DeleteIPSetEntry(context.Context, pve.Scope, string, string, string) error {
	return fmt.Errorf("not used")
}

func (f *fakeClient) UpdateIPSetEntry(context.Context, pve.Scope, string, pve.IPSetEntry) error {
	return fmt.Errorf("not used")
}

func (f *fakeClient) counts() (list int, configs map[int]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := map[int]int{}
	for k, v := range f.configCalls {
		c[k] = v
	}
	return f.listCalls, c
}

var (
	errAuth      = &pve.Error{Method: "GET", Path: "/cluster/resources", StatusCode: http.StatusUnauthorized, Reason: "authentication failure"}
	errOutage    = &pve.Error{Method: "GET", Path: "/cluster/resources", StatusCode: http.StatusServiceUnavailable, Reason: "Service Unavailable"}
	errForbidden = &pve.Error{Method: "GET", Path: "/nodes/pve1/qemu/101/config", StatusCode: http.StatusForbidden, Reason: "Permission check failed (/vms/101, VM.Audit)"}
	errNoHost    = &pve.Error{Method: "GET", Path: "/nodes/pve3/qemu/300/config", StatusCode: 595, Reason: "No route to host"}
)

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
