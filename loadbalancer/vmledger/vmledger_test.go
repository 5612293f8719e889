package vmledger

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/pve"
)

func vm(region, host string, id int) firewall.VM {
	return firewall.VM{Region: region, Ref: pve.VMRef{Node: host, VMID: id}}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		raw     string
		want    int
		wantErr bool
	}{
		{`[]`, 0, false},
		{`[{"region":"east","host":"pve1","vmid":101,"name":"talos-w1","node":"w1"}]`, 1, false},
		{`[{"region":"east","host":"pve1","vmid":101},{"region":"west","host":"pve9","vmid":102}]`, 2, false},
		{`[{"region":"east","vmid":101}]`, 0, true},
		{`[{"region":"east","host":"pve1","vmid":7}]`, 0, true},
		{`{`, 0, true},
	}
	for _, tt := range tests {
		got, err := Decode(tt.raw)
		if (err != nil) != tt.wantErr || len(got) != tt.want {
			t.Errorf("Decode(%s) = %v, %v; want %d VMs, error %v", tt.raw, got, err, tt.want, tt.wantErr)
		}
	}
	// Encode and Decode agree, in a stable order.
	in := []firewall.VM{vm("west", "pve9", 102), vm("east", "pve2", 103), vm("east", "pve1", 101)}
	out, err := Decode(Encode(in))
	if err != nil || len(out) != 3 || out[0].Ref.VMID != 101 || out[1].Ref.VMID != 103 || out[2].Region != "west" {
		t.Fatalf("round trip = %v, %v", out, err)
	}
}

func TestUnionKeepsEachVMOnce(t *testing.T) {
	moved := vm("east", "pve3", 101) // live-migrated: same VM id, new host
	got := Union([]firewall.VM{moved}, []firewall.VM{vm("east", "pve1", 101), vm("east", "pve2", 102)})
	if len(got) != 2 || got[0].Ref.Node != "pve3" || got[1].Ref.VMID != 102 {
		t.Fatalf("Union = %v", got)
	}
}

// Save writes only when the record changes; Load reads what Save wrote.
func TestSaveWritesOnlyChanges(t *testing.T) {
	kube := fake.NewClientset()
	writes := 0
	kube.PrependReactor("*", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetVerb() == "create" || a.GetVerb() == "update" {
			writes++
		}
		return false, nil, nil
	})
	ctx := context.Background()
	l := New(kube, "pvelb-system")
	if got, err := l.Load(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Load of no record = %v, %v", got, err)
	}
	two := []firewall.VM{vm("east", "pve1", 101), vm("east", "pve2", 102)}
	for range 3 {
		if err := l.Save(ctx, two); err != nil {
			t.Fatal(err)
		}
	}
	if writes != 1 {
		t.Fatalf("%d writes for one record saved three times, want 1", writes)
	}
	if err := l.Save(ctx, two[:1]); err != nil || writes != 2 {
		t.Fatalf("Save of a changed record: %v, %d writes", err, writes)
	}
	got, err := New(kube, "pvelb-system").Load(ctx)
	if err != nil || len(got) != 1 || got[0].Ref.VMID != 101 {
		t.Fatalf("Load = %v, %v", got, err)
	}
	cm, err := kube.CoreV1().ConfigMaps("pvelb-system").Get(ctx, names.ConfigMapFirewallVMs, metav1.GetOptions{})
	if err != nil || cm.Labels["app.kubernetes.io/part-of"] != "pvelb" {
		t.Fatalf("ConfigMap = %v, %v", cm, err)
	}
}
