// Package status is `pvelbctl status`: pvelb's Services with their VIPs and
// pools, which node or nodes announce each VIP and on which Proxmox host and
// VM (from the ServiceAnnouncements the announcers keep), the pools' usage
// and each node's BGP sessions (from the BGPPeers' status). Report building is pure; Collect does the reading.
package status

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
)

// Input is everything the report is built from.
type Input struct {
	Services      []corev1.Service
	Announcements []v1alpha1.ServiceAnnouncement
	Pools         []v1alpha1.IPPool
	Peers         []v1alpha1.BGPPeer
	Now           time.Time
}

// Report is what `pvelbctl status` prints.
type Report struct {
	Services []ServiceRow
	Pools    []PoolRow
	Sessions []SessionRow
}

// SessionRow is one node's session to one BGPPeer.
type SessionRow struct {
	Peer, Address, Node, State string
	Since                      time.Duration // 0 when unknown
}

// ServiceRow is one VIP of one pvelb Service (a dual-stack Service has two).
type ServiceRow struct {
	Namespace, Name string
	Class           string // names.Class or "(default)"
	VIP             string // "<pending>" while none is assigned
	Pool            string
	// Mode, Nodes and Hosts come from the ServiceAnnouncements holding the
	// VIP: L2 (one node answers ARP/NDP) or BGP (each node advertises it);
	// the nodes sorted, and each one's Proxmox host and VM as host/vmid.
	// Nodes is empty when no node announces the VIP.
	Mode  string
	Nodes []string
	Hosts []string
	// Since is how long the longest-announcing node has announced it.
	Since time.Duration
}

// PoolRow is one IPPool's usage.
type PoolRow struct {
	Name      string
	Addresses string
	Mode      string
	Used      int64
	Total     string
	Free      string
	Problems  []string // conditions that are not fine (Ready=False, Overlapping=True)
}

// IsPvelbService reports whether pvelb serves the Service: its own class,
// or the default class when pvelb allocated it (the allocated-pool annotation).
func IsPvelbService(s *corev1.Service) bool {
	if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if s.Spec.LoadBalancerClass != nil {
		return names.IsClass(s)
	}
	_, ok := names.AllocatedPool(s)
	return ok
}

// Build makes the report. Each VIP's row names the nodes whose
// ServiceAnnouncement of its Service holds it.
func Build(in Input) Report {
	type key struct{ ns, name, ip string }
	byVIP := map[key][]v1alpha1.ServiceAnnouncement{}
	for _, a := range in.Announcements {
		for _, ip := range a.Status.IPs {
			k := key{a.Namespace, a.Status.Service, ip}
			byVIP[k] = append(byVIP[k], a)
		}
	}
	var r Report
	for i := range in.Services {
		s := &in.Services[i]
		if !IsPvelbService(s) {
			continue
		}
		class := "(default)"
		if s.Spec.LoadBalancerClass != nil {
			class = *s.Spec.LoadBalancerClass
		}
		pool, _ := names.AllocatedPool(s)
		if len(s.Status.LoadBalancer.Ingress) == 0 {
			r.Services = append(r.Services, ServiceRow{Namespace: s.Namespace, Name: s.Name, Class: class, VIP: "<pending>", Pool: pool})
			continue
		}
		for _, in0 := range s.Status.LoadBalancer.Ingress {
			row := ServiceRow{Namespace: s.Namespace, Name: s.Name, Class: class, VIP: in0.IP, Pool: pool}
			anns := byVIP[key{s.Namespace, s.Name, in0.IP}]
			slices.SortFunc(anns, func(a, b v1alpha1.ServiceAnnouncement) int { return strings.Compare(a.Status.Node, b.Status.Node) })
			for _, a := range anns {
				row.Mode = string(a.Status.Mode)
				row.Nodes = append(row.Nodes, a.Status.Node)
				row.Hosts = append(row.Hosts, dash(a.Status.ProxmoxHost)+"/"+dash(a.Status.VMID))
				if at := a.CreationTimestamp.Time; !at.IsZero() && !in.Now.IsZero() {
					row.Since = max(row.Since, in.Now.Sub(at))
				}
			}
			r.Services = append(r.Services, row)
		}
	}
	sort.SliceStable(r.Services, func(i, j int) bool {
		a, b := r.Services[i], r.Services[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	for _, p := range in.Pools {
		row := PoolRow{Name: p.Name, Addresses: strings.Join(p.Spec.Addresses, ","), Mode: string(p.Spec.Announce.Mode)}
		if row.Mode == "" {
			row.Mode = "arp"
		}
		for _, u := range []*v1alpha1.FamilyUsage{p.Status.IPv4, p.Status.IPv6} {
			if u == nil {
				continue
			}
			row.Used += u.Used
			row.Total = joinNonEmpty(row.Total, u.Total)
			row.Free = joinNonEmpty(row.Free, u.Free)
		}
		for _, c := range p.Status.Conditions {
			if (c.Type == "Ready" && c.Status != metav1.ConditionTrue) || (c.Type == "Overlapping" && c.Status == metav1.ConditionTrue) {
				row.Problems = append(row.Problems, fmt.Sprintf("%s=%s: %s", c.Type, c.Status, c.Message))
			}
		}
		r.Pools = append(r.Pools, row)
	}
	sort.Slice(r.Pools, func(i, j int) bool { return r.Pools[i].Name < r.Pools[j].Name })
	for _, p := range in.Peers {
		if len(p.Status.Sessions) == 0 {
			r.Sessions = append(r.Sessions, SessionRow{Peer: p.Name, Address: p.Spec.PeerAddress})
		}
		for _, s := range p.Status.Sessions {
			row := SessionRow{Peer: p.Name, Address: p.Spec.PeerAddress, Node: s.Node, State: s.State}
			if s.Since != nil && !in.Now.IsZero() {
				row.Since = in.Now.Sub(s.Since.Time)
			}
			r.Sessions = append(r.Sessions, row)
		}
	}
	sort.SliceStable(r.Sessions, func(i, j int) bool {
		a, b := r.Sessions[i], r.Sessions[j]
		if a.Peer != b.Peer {
			return a.Peer < b.Peer
		}
		return a.Node < b.Node
	})
	return r
}

func joinNonEmpty(a, b string) string {
	if a == "" {
		return b
	}
	return a + "+" + b
}

// Render prints the report as two tables.
func Render(w io.Writer, r Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(r.Services) == 0 {
		fmt.Fprintln(tw, "No LoadBalancer Services served by pvelb.")
	} else {
		fmt.Fprintln(tw, "NAMESPACE\tSERVICE\tCLASS\tVIP\tPOOL\tMODE\tANNOUNCED BY\tPROXMOX HOST/VM\tSINCE")
		for _, s := range r.Services {
			nodes, hosts, since := strings.Join(s.Nodes, ","), strings.Join(s.Hosts, ","), "-"
			if len(s.Nodes) == 0 {
				nodes = "(nobody: see the Service's NotAnnounced Events)"
				if s.VIP == "<pending>" {
					nodes = "-"
				}
			} else if s.Since > 0 {
				since = s.Since.Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Name, s.Class, s.VIP, dash(s.Pool), dash(s.Mode), nodes, dash(hosts), since)
		}
	}
	fmt.Fprintln(tw)
	if len(r.Pools) == 0 {
		fmt.Fprintln(tw, "No IPPools: create one (kind IPPool, apiVersion pvelb.io/v1alpha1) so Services get addresses.")
	} else {
		fmt.Fprintln(tw, "POOL\tADDRESSES\tANNOUNCE\tUSED\tTOTAL\tFREE\tPROBLEMS")
		for _, p := range r.Pools {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Name, p.Addresses, p.Mode, p.Used, dash(p.Total), dash(p.Free), dash(strings.Join(p.Problems, "; ")))
		}
	}
	if len(r.Sessions) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "BGP PEER\tADDRESS\tNODE\tSESSION\tSINCE")
		for _, s := range r.Sessions {
			node, state, since := s.Node, s.State, "-"
			if node == "" {
				node, state = "(no node reports a session)", "-"
			}
			if s.Since > 0 {
				since = s.Since.Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Peer, s.Address, node, state, since)
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Collect reads Services, ServiceAnnouncements, the IPPools and the
// BGPPeers. A missing IPPool
// CRD is reported as an error naming it.
func Collect(ctx context.Context, kube kubernetes.Interface, dyn dynamic.Interface) (Input, error) {
	in := Input{Now: time.Now()}
	svcs, err := kube.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return in, fmt.Errorf("listing Services: %w", err)
	}
	in.Services = svcs.Items
	anns, err := dyn.Resource(names.ServiceAnnouncements).List(ctx, metav1.ListOptions{})
	if err != nil {
		return in, fmt.Errorf("listing ServiceAnnouncements (is the CRD serviceannouncements.pvelb.io installed?): %w", err)
	}
	for _, u := range anns.Items {
		var a v1alpha1.ServiceAnnouncement
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &a); err != nil {
			return in, fmt.Errorf("ServiceAnnouncement %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		in.Announcements = append(in.Announcements, a)
	}
	list, err := dyn.Resource(names.IPPools).List(ctx, metav1.ListOptions{})
	if err != nil {
		return in, fmt.Errorf("listing IPPools (is the CRD ippools.pvelb.io installed?): %w", err)
	}
	for _, u := range list.Items {
		p, err := names.IPPool(&u)
		if err != nil {
			return in, err
		}
		in.Pools = append(in.Pools, *p)
	}
	peers, err := dyn.Resource(names.BGPPeers).List(ctx, metav1.ListOptions{})
	if err != nil {
		return in, fmt.Errorf("listing BGPPeers (is the CRD bgppeers.pvelb.io installed?): %w", err)
	}
	for _, u := range peers.Items {
		p, err := names.BGPPeer(&u)
		if err != nil {
			return in, err
		}
		in.Peers = append(in.Peers, *p)
	}
	return in, nil
}
