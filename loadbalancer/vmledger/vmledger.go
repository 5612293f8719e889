// Package vmledger records, in a ConfigMap of pvelb-ccm's namespace, the
// Proxmox VMs that may hold pvelb's IPSet entries, so that a replica that
// starts after a Node was deleted while no replica led still finds its VM
// and removes pvelb's entries from it (firewall.Reconciler.Retire); a VM
// repurposed with those entries would still send from and answer for the
// VIPs. Proxmox entries carry no cluster identity, so scanning every VM for
// "pvelb:" entries could strip those of another cluster's pvelb: the record
// names exactly this cluster's VMs.
package vmledger

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/pve"
)

// dataKey holds the record in the ConfigMap.
const dataKey = "vms.json"

// entry is one VM as recorded.
type entry struct {
	Region string `json:"region"`
	Host   string `json:"host"`
	VMID   int    `json:"vmid"`
	Name   string `json:"name,omitempty"`
	Node   string `json:"node,omitempty"`
}

// Encode renders vms as the record: sorted, without VIPs or addresses.
func Encode(vms []firewall.VM) string {
	vms = slices.Clone(vms)
	firewall.SortVMs(vms)
	es := make([]entry, 0, len(vms))
	for _, vm := range vms {
		es = append(es, entry{Region: vm.Region, Host: vm.Ref.Node, VMID: vm.Ref.VMID, Name: vm.Name, Node: vm.Node})
	}
	b, _ := json.Marshal(es) // plain strings and ints: cannot fail
	return string(b)
}

// Decode reads a record written by Encode. An entry without a region, host
// or valid VM id is an error naming it: a record pvelb cannot read fully is
// not half-trusted.
func Decode(s string) ([]firewall.VM, error) {
	var es []entry
	if err := json.Unmarshal([]byte(s), &es); err != nil {
		return nil, fmt.Errorf("%s: %w", dataKey, err)
	}
	out := make([]firewall.VM, 0, len(es))
	for i, e := range es {
		if e.Region == "" || e.Host == "" || e.VMID < 100 {
			return nil, fmt.Errorf("%s[%d]: region, host and vmid (100 or more) are required", dataKey, i)
		}
		out = append(out, firewall.VM{Region: e.Region, Ref: pve.VMRef{Node: e.Host, VMID: e.VMID}, Name: e.Name, Node: e.Node})
	}
	return out, nil
}

// Union is every VM of the lists, once per region and VM id (the first
// list naming it wins).
func Union(lists ...[]firewall.VM) []firewall.VM {
	type key struct {
		region string
		vmid   int
	}
	seen := map[key]bool{}
	var out []firewall.VM
	for _, vm := range slices.Concat(lists...) {
		k := key{vm.Region, vm.Ref.VMID}
		if !seen[k] {
			seen[k] = true
			vm.VIPs, vm.Addresses = nil, nil
			out = append(out, vm)
		}
	}
	firewall.SortVMs(out)
	return out
}

// Ledger reads and writes the record.
type Ledger struct {
	kube      kubernetes.Interface
	namespace string
	last      *string // what the ConfigMap holds, as last read or written
}

// New returns a Ledger on the ConfigMap names.ConfigMapFirewallVMs in namespace.
func New(kube kubernetes.Interface, namespace string) *Ledger {
	return &Ledger{kube: kube, namespace: namespace}
}

// Load reads the record; none yet is an empty one.
func (l *Ledger) Load(ctx context.Context) ([]firewall.VM, error) {
	cm, err := l.kube.CoreV1().ConfigMaps(l.namespace).Get(ctx, names.ConfigMapFirewallVMs, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	raw, ok := cm.Data[dataKey]
	if !ok {
		return nil, nil
	}
	vms, err := Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: %w", l.namespace, names.ConfigMapFirewallVMs, err)
	}
	l.last = &raw
	return vms, nil
}

// Save records vms. It writes only when the record changes.
func (l *Ledger) Save(ctx context.Context, vms []firewall.VM) error {
	raw := Encode(vms)
	if l.last != nil && *l.last == raw {
		return nil
	}
	cms := l.kube.CoreV1().ConfigMaps(l.namespace)
	cm, err := cms.Get(ctx, names.ConfigMapFirewallVMs, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cm = &v1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: names.ConfigMapFirewallVMs, Namespace: l.namespace,
				Labels: map[string]string{"app.kubernetes.io/part-of": "pvelb"}},
			Data: map[string]string{dataKey: raw},
		}
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
	case err == nil:
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[dataKey] = raw
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("recording the VMs with pvelb entries in ConfigMap %s/%s: %w", l.namespace, names.ConfigMapFirewallVMs, err)
	}
	l.last = &raw
	return nil
}
