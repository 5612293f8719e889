package doctor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/pvelb/pvelb/announcer/membership"
	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/instances"
	"github.com/pvelb/pvelb/provider/pve"
)

// Options are the knobs of RunWith.
type Options struct {
	// MembershipPort is the announcers' UDP heartbeat port, checked against
	// the VMs' firewall rules.
	MembershipPort int

	// bgp are the BGPPeers' sessions, read by RunWith: each selected node's
	// VM must let its TCP connection to the peer's port out.
	bgp []bgpSession
}

// bgpSession is one BGPPeer as the firewall check needs it.
type bgpSession struct {
	peer     string
	port     int
	selector labels.Selector // nil: every node
}

// Run is RunWith with the announcers' default membership port.
func Run(ctx context.Context, cfg *config.Config, nodes []corev1.Node, dyn dynamic.Interface) Report {
	return RunWith(ctx, cfg, nodes, dyn, Options{MembershipPort: membership.DefaultPort})
}

// RunWith checks everything: each Proxmox cluster of the config against the
// Nodes, then the CRDs and pools (when dyn is set).
func RunWith(ctx context.Context, cfg *config.Config, nodes []corev1.Node, dyn dynamic.Interface, opts Options) Report {
	var r Report
	if dyn != nil {
		opts.bgp = readBGPSessions(ctx, dyn)
	}
	matched := map[string]bool{}
	for _, cl := range cfg.Clusters {
		checkProxmox(ctx, cl, cfg, nodes, matched, opts, &r)
	}
	for _, n := range nodes {
		if matched[n.Name] {
			continue
		}
		r.add(Fail, "node "+n.Name,
			"give the Node's VM the Node's systemUUID (Proxmox sets smbios1 uuid; Talos reports it), and check the token has VM.Audit on it",
			"no Proxmox VM matched (providerID %q, systemUUID %q)", n.Spec.ProviderID, n.Status.NodeInfo.SystemUUID)
	}
	if dyn != nil {
		CheckKubernetes(ctx, dyn, &r)
	}
	return r
}

// proxmoxCheck is one check of a Proxmox cluster. It adds its findings to
// the report and returns false when the checks after it cannot run. Adding
// a check is adding a function to proxmoxChecks.
type proxmoxCheck func(ctx context.Context, p *proxmoxRun, r *Report) bool

// proxmoxChecks run in order against each cluster of the cloud config.
var proxmoxChecks = []proxmoxCheck{
	checkReachable,
	checkEndpoints,
	checkListsVMs,
	checkNodeVMs,
	checkPrivileges,
	checkIPFilters,
	checkMembershipRules,
}

// proxmoxRun is what the checks of one cluster share.
type proxmoxRun struct {
	opts    Options
	cl      config.Cluster
	cfg     *config.Config
	area    string
	client  pve.Client
	vms     *instances.Instances
	nodes   []corev1.Node
	matched map[string]bool // Node names matched to a VM, by any cluster

	release pve.Release // set by checkReachable
	matches []vmMatch   // set by checkNodeVMs, sorted by Node name
}

// vmMatch is a Node and its VM.
type vmMatch struct {
	node *corev1.Node
	vm   *instances.VM
}

// CheckProxmox checks one Proxmox cluster: reachability and the token,
// privileges, the Nodes' VMs and each VM's IP filter. Nodes it matches are
// recorded in matched.
func CheckProxmox(ctx context.Context, cl config.Cluster, cfg *config.Config, nodes []corev1.Node, matched map[string]bool, r *Report) {
	checkProxmox(ctx, cl, cfg, nodes, matched, Options{MembershipPort: membership.DefaultPort}, r)
}

func checkProxmox(ctx context.Context, cl config.Cluster, cfg *config.Config, nodes []corev1.Node, matched map[string]bool, opts Options, r *Report) {
	p := &proxmoxRun{opts: opts, cl: cl, cfg: cfg, area: "proxmox " + cl.Region + " (" + strings.Join(cl.URLs, ", ") + ")", nodes: nodes, matched: matched}
	client, err := pve.New(clientOptions(cl, cl.URLs))
	if err != nil {
		r.add(Fail, p.area, "fix the cloud config's clusters[] entry", "%v", err)
		return
	}
	// The cache serves every Node's lookup from one VM list and one read
	// of each VM's config.
	p.vms, err = instances.New(instances.Options{
		Regions:   []instances.Region{{Name: cl.Region, Client: client}},
		Addresses: cfg.Instances.Addresses, CacheTTL: time.Hour,
	})
	if err != nil {
		r.add(Fail, p.area, "", "%v", err)
		return
	}
	p.client = client
	for _, check := range proxmoxChecks {
		if !check(ctx, p, r) {
			return
		}
	}
}

// checkReachable: the API answers the token, and which release it runs.
func checkReachable(ctx context.Context, p *proxmoxRun, r *Report) bool {
	ver, err := p.client.Version(ctx)
	if err != nil {
		fix := "check url and that this machine reaches Proxmox on port 8006"
		var pe *pve.Error
		var ce *tls.CertificateVerificationError
		switch {
		case errors.As(err, &pe) && pe.StatusCode == http.StatusUnauthorized:
			fix = "the token is unknown or its secret wrong: check tokenID and tokenSecret/tokenSecretFile (pveum user token list pvelb@pve)"
		case errors.As(err, &ce) || strings.Contains(err.Error(), "certificate"):
			fix = "Proxmox's certificate is not trusted: set clusters[].caFile to its CA (/etc/pve/pve-root-ca.pem)"
		}
		r.add(Fail, p.area, fix, "Proxmox API not usable with the token: %v", err)
		return false
	}
	r.add(OK, p.area, "", "reachable, token %s accepted, Proxmox VE %s", p.cl.TokenID, ver)
	p.release = pve.ReleaseOf(ver)
	return true
}

// clientOptions are a doctor's client of cl through urls: no retries, so
// every failure shows at once.
func clientOptions(cl config.Cluster, urls []string) pve.Options {
	return pve.Options{
		Region: cl.Region, URLs: urls, TokenID: cl.TokenID, TokenSecret: cl.TokenSecret.Reveal(),
		CAFile: cl.CAFile, InsecureSkipVerify: cl.InsecureSkipVerify, Timeout: cl.Timeout, MaxRetries: -1,
	}
}

// checkEndpoints: with several urls, each host answers on its own and lists
// the same VMs as the first that answers. The client fails over silently, so
// a dead host would otherwise go unseen until the last one dies; and a URL of
// another cluster's host would, after a failover, make the cluster's VMs look
// gone.
func checkEndpoints(ctx context.Context, p *proxmoxRun, r *Report) bool {
	if len(p.cl.URLs) < 2 {
		return true
	}
	var ref []int
	refURL, answered := "", 0
	for i, u := range p.cl.URLs {
		c, err := pve.New(clientOptions(p.cl, []string{u}))
		if err != nil {
			r.add(Fail, p.area, "fix the cloud config's urls", "urls[%d]: %v", i, err)
			continue
		}
		vms, err := c.ClusterVMs(ctx)
		if err != nil {
			r.add(Warn, p.area, "check that pveproxy runs on that host (systemctl status pveproxy) and that this machine reaches it on port 8006; pvelb uses the other urls meanwhile",
				"urls[%d] %s does not answer: %v", i, u, err)
			continue
		}
		answered++
		ids := make([]int, 0, len(vms))
		for _, vm := range vms {
			ids = append(ids, vm.VMID)
		}
		sort.Ints(ids)
		if refURL == "" {
			ref, refURL = ids, u
			continue
		}
		if !slices.Equal(ids, ref) {
			r.add(Fail, p.area, "list in urls only hosts of this one Proxmox cluster (pvecm nodes on any of them)",
				"urls[%d] %s lists %d VMs, %s lists %d, not the same: a host of another cluster? After a failover pvelb would look for the Nodes' VMs there",
				i, u, len(ids), refURL, len(ref))
		}
	}
	if answered == len(p.cl.URLs) {
		r.add(OK, p.area, "", "all %d urls answer and list the same VMs", answered)
	}
	return true
}

// checkListsVMs: the token may list the cluster's VMs.
func checkListsVMs(ctx context.Context, p *proxmoxRun, r *Report) bool {
	if _, err := p.client.ClusterVMs(ctx); err != nil {
		r.add(Fail, p.area, "", "listing VMs: %v", err)
		return false
	}
	return true
}

// checkNodeVMs matches the Nodes not matched yet to this cluster's VMs the
// way pvelb-ccm does (provider/instances): by providerID in this region,
// by the uuid of a proxmox://<uuid> providerID, else by systemUUID.
func checkNodeVMs(ctx context.Context, p *proxmoxRun, r *Report) bool {
	for i := range p.nodes {
		n := &p.nodes[i]
		if p.matched[n.Name] {
			continue
		}
		var vmid int
		if _, ok := instances.ProviderIDUUID(n.Spec.ProviderID); ok {
			// Cluster API's proxmox://<uuid>: matched by uuid, like a
			// Node without providerID.
		} else if n.Spec.ProviderID != "" {
			reg, id, err := instances.ParseProviderID(n.Spec.ProviderID)
			if err != nil || reg != p.cl.Region {
				continue
			}
			vmid = id
		} else if strings.TrimSpace(n.Status.NodeInfo.SystemUUID) == "" {
			continue
		}
		vm, err := p.vms.VMForNode(ctx, n)
		switch {
		case err == nil:
			p.matches = append(p.matches, vmMatch{n, vm})
		case vmid == 0 && !errors.Is(err, cloudprovider.InstanceNotFound):
			// Not matched here (a duplicate uuid, VMs it could not read):
			// another cluster may still hold the Node's VM.
			r.add(Warn, "node "+n.Name, "", "%s: %v", p.area, err)
			continue
		case !errors.Is(err, cloudprovider.InstanceNotFound):
			r.add(Fail, "node "+n.Name, "", "%v", err)
		case vmid != 0:
			r.add(Fail, "node "+n.Name, "if the VM exists, give the token VM.Audit on /vms/"+strconv.Itoa(vmid)+"; if not, delete the Node",
				"providerID %s names VM %d, which the token does not see in region %s", n.Spec.ProviderID, vmid, p.cl.Region)
		default:
			continue // no VM of this cluster has its UUID: maybe another's
		}
		p.matched[n.Name] = true
	}
	sort.Slice(p.matches, func(i, j int) bool { return p.matches[i].node.Name < p.matches[j].node.Name })
	return true
}

// checkPrivileges names exactly the privileges the token lacks on the
// matched VMs and the root.
func checkPrivileges(ctx context.Context, p *proxmoxRun, r *Report) bool {
	var vmids []int
	for _, m := range p.matches {
		vmids = append(vmids, m.vm.Resource.VMID)
	}
	needs := Needs(vmids, p.cfg.Firewall.Enabled, p.cfg.Instances.Addresses == config.AddressesProvidedAndAgent, p.release.Major)
	have := map[string]map[string]bool{}
	for _, n := range needs {
		if _, ok := have[n.Path]; ok {
			continue
		}
		privs, err := p.client.Permissions(ctx, p.cl.TokenID, n.Path)
		if err != nil {
			r.add(Warn, p.area, "run `pveum user token permissions "+strings.Replace(p.cl.TokenID, "!", " ", 1)+"` on a Proxmox host and compare with docs/proxmox-setup.md",
				"could not read the token's permissions (GET /access/permissions): %v", err)
			return true
		}
		have[n.Path] = privs
	}
	missing := Missing(needs, have)
	if len(missing) == 0 {
		r.add(OK, p.area, "", "token holds every privilege pvelb needs (%d checked)", len(needs))
		return true
	}
	why := map[string]string{}
	for _, m := range missing {
		why[m.Privilege] = m.Why
	}
	lines := GroupMissing(missing)
	var fixes []string
	for _, l := range lines {
		priv := strings.SplitN(l, " ", 2)[0]
		fixes = append(fixes, fmt.Sprintf("grant %s (needed to %s)", l, why[priv]))
	}
	fixes = append(fixes, "see docs/proxmox-setup.md for the pveum role and ACL commands; a privilege-separated token needs the ACLs on the token too")
	r.add(Fail, p.area, strings.Join(fixes, "\n"), "token %s lacks privileges: %s", p.cl.TokenID, strings.Join(lines, "; "))
	return true
}

// checkIPFilters assesses each matched VM's firewall and the IP filter of
// each managed NIC.
func checkIPFilters(ctx context.Context, p *proxmoxRun, r *Report) bool {
	nics := p.cfg.Firewall.NICs
	if len(nics) == 0 {
		nics = []string{config.DefaultNIC}
	}
	for _, m := range p.matches {
		area := "node " + m.node.Name
		res := m.vm.Resource
		r.add(OK, area, "", "VM %d %q on %s (%s)", res.VMID, res.Name, res.Node, res.Status)
		if !p.cfg.Firewall.Enabled && len(p.cfg.Firewall.NICs) == 0 {
			continue
		}
		opts, err := p.client.VMFirewallOptions(ctx, m.vm.Ref())
		if err != nil {
			r.add(Fail, area, "the token needs VM.Audit on /vms/"+strconv.Itoa(res.VMID), "reading VM firewall options: %v", err)
			continue
		}
		scope := pve.VMScope(m.vm.Ref())
		sets, err := p.client.IPSets(ctx, scope)
		if err != nil {
			r.add(Fail, area, "the token needs VM.Audit on /vms/"+strconv.Itoa(res.VMID), "listing VM IPSets: %v", err)
			continue
		}
		have := map[string]bool{}
		for _, s := range sets {
			have[s.Name] = true
		}
		for _, nic := range nics {
			n := NIC{Name: nic, VMFirewall: opts.Enable, IPFilter: opts.IPFilter, OwnIPs: nodeIPs(m.node)}
			idx, _ := strconv.Atoi(strings.TrimPrefix(nic, "net"))
			if raw, ok := m.vm.Config.Nets[idx]; ok {
				n.Present = true
				if nc, err := pve.ParseNet(raw); err == nil {
					n.Firewall = nc.Firewall
				}
			}
			set := pve.IPFilterSet(nic)
			if have[set] {
				n.SetExists = true
				if n.Entries, err = p.client.IPSetEntries(ctx, scope, set); err != nil {
					r.add(Fail, area, "", "reading %s: %v", set, err)
					continue
				}
			}
			sev, msg, fix := AssessNIC(n, p.cfg.Firewall.Enabled, fmt.Sprintf("/nodes/%s/qemu/%d", res.Node, res.VMID))
			r.add(sev, area, fix, "%s", msg)
		}
	}
	return true
}

// nodeIPs are the Node's InternalIPs, or its provided-node-ip annotation
// before the CCM initialised it.
func nodeIPs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		if ips, ok, err := instances.ProvidedNodeIPs(n); ok && err == nil {
			out = ips
		}
	}
	return out
}

// CheckKubernetes checks pvelb's CRDs are installed and the pools parse
// and do not overlap.
func CheckKubernetes(ctx context.Context, dyn dynamic.Interface, r *Report) {
	const area = "kubernetes"
	for _, name := range names.CRDNames {
		_, err := dyn.Resource(names.CRDs).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			r.add(OK, area, "", "CRD %s installed", name)
		case apierrors.IsNotFound(err):
			r.add(Fail, area, "kubectl apply -k manifests/ (or install the Helm chart)", "CRD %s is not installed", name)
		default:
			r.add(Warn, area, "", "reading CRD %s: %v", name, err)
		}
	}
	list, err := dyn.Resource(names.IPPools).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	var pools []v1alpha1.IPPool
	for _, u := range list.Items {
		p, err := names.IPPool(&u)
		if err != nil {
			r.add(Fail, area, "fix the IPPool's spec", "%v", err)
			continue
		}
		pools = append(pools, *p)
	}
	r.Findings = append(r.Findings, AssessPools(pools)...)
}

// AssessPools judges the IPPools: none at all, ones that do not parse, and
// overlapping ones (an address in two pools could be handed out twice).
func AssessPools(pools []v1alpha1.IPPool) []Finding {
	const area = "kubernetes"
	if len(pools) == 0 {
		return []Finding{{Severity: Warn, Area: area, Message: "no IPPool: Services get no EXTERNAL-IP",
			Fix: "create an IPPool (apiVersion pvelb.io/v1alpha1) with addresses on the nodes' network"}}
	}
	var out []Finding
	var parsed []allocator.Pool
	for i := range pools {
		p, err := allocator.PoolFromAPI(&pools[i])
		if err != nil {
			out = append(out, Finding{Severity: Fail, Area: area, Message: fmt.Sprintf("IPPool %s: %v", pools[i].Name, err), Fix: "fix the IPPool's spec"})
			continue
		}
		parsed = append(parsed, p)
	}
	ov := allocator.Overlaps(parsed)
	names := make([]string, 0, len(ov))
	for n := range ov {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, Finding{Severity: Fail, Area: area,
			Message: fmt.Sprintf("IPPool %s overlaps %s", n, strings.Join(ov[n], ", ")),
			Fix:     "make the pools' address ranges disjoint"})
	}
	if len(ov) == 0 && len(parsed) > 0 {
		out = append(out, Finding{Severity: OK, Area: area, Message: fmt.Sprintf("%d IPPool(s), no overlaps", len(parsed))})
	}
	return out
}
