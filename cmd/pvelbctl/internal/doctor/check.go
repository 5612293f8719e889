package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/instances"
	"github.com/pvelb/pvelb/provider/pve"
)

// Run checks everything: each Proxmox cluster of the config against the
// Nodes, then the CRDs and pools (when dyn is set).
func Run(ctx context.Context, cfg *config.Config, nodes []corev1.Node, dyn dynamic.Interface) Report {
	var r Report
	matched := map[string]bool{}
	for _, cl := range cfg.Clusters {
		CheckProxmox(ctx, cl, cfg, nodes, matched, &r)
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

// api is the few raw calls doctor makes besides pve.Client's: the version
// and the token's effective permissions. The secret goes only into the
// Authorization header, never into an error.
type api struct {
	base, auth string
	hc         *http.Client
}

func newAPI(cl config.Cluster) (*api, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cl.InsecureSkipVerify} //nolint:gosec // the user's explicit, loudly warned choice
	if cl.CAFile != "" {
		b, err := os.ReadFile(cl.CAFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("caFile %s: no PEM certificate in it", cl.CAFile)
		}
		tc.RootCAs = pool
	}
	timeout := cl.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	return &api{
		base: strings.TrimSuffix(cl.URL, "/"),
		auth: "PVEAPIToken=" + cl.TokenID + "=" + cl.TokenSecret.Reveal(),
		hc:   &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tc}},
	}, nil
}

// apiError keeps the HTTP status of a refused call.
type apiError struct {
	Status int
	Reason string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d %s", e.Status, e.Reason) }

func (a *api) get(ctx context.Context, path string, q url.Values, out any) error {
	u := a.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", a.auth)
	resp, err := a.hc.Do(req)
	if err != nil {
		// url.Error holds the URL only, which has no secret.
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		reason := strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)))
		return &apiError{Status: resp.StatusCode, Reason: reason}
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return json.Unmarshal(env.Data, out)
}

// permissions reads the token's effective privileges on each path.
func (a *api) permissions(ctx context.Context, tokenID string, paths []string) (map[string]map[string]bool, error) {
	have := map[string]map[string]bool{}
	for _, p := range paths {
		var got map[string]map[string]any
		if err := a.get(ctx, "/access/permissions", url.Values{"userid": {tokenID}, "path": {p}}, &got); err != nil {
			return nil, err
		}
		privs := map[string]bool{}
		// Values are propagate flags; holding the privilege is what counts.
		for _, m := range got {
			for k := range m {
				privs[k] = true
			}
		}
		have[p] = privs
	}
	return have, nil
}

// CheckProxmox checks one Proxmox cluster: reachability and the token,
// privileges, the Nodes' VMs and each VM's IP filter. Nodes it matches are
// recorded in matched.
func CheckProxmox(ctx context.Context, cl config.Cluster, cfg *config.Config, nodes []corev1.Node, matched map[string]bool, r *Report) {
	area := "proxmox " + cl.Region + " (" + cl.URL + ")"
	a, err := newAPI(cl)
	if err != nil {
		r.add(Fail, area, "fix the cloud config's clusters[].caFile", "%v", err)
		return
	}
	var ver struct {
		Version string `json:"version"`
	}
	if err := a.get(ctx, "/version", nil, &ver); err != nil {
		sev, fix := Fail, "check url and that this machine reaches Proxmox on port 8006"
		var ae *apiError
		var ce *tls.CertificateVerificationError
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
			fix = "the token is unknown or its secret wrong: check tokenID and tokenSecret/tokenSecretFile (pveum user token list pvelb@pve)"
		case errors.As(err, &ce) || strings.Contains(err.Error(), "certificate"):
			fix = "Proxmox's certificate is not trusted: set clusters[].caFile to its CA (/etc/pve/pve-root-ca.pem)"
		}
		r.add(sev, area, fix, "Proxmox API not usable with the token: %v", err)
		return
	}
	r.add(OK, area, "", "reachable, token %s accepted, Proxmox VE %s", cl.TokenID, ver.Version)
	major, _ := strconv.Atoi(strings.SplitN(ver.Version, ".", 2)[0])

	client, err := pve.New(pve.Options{
		Region: cl.Region, URL: cl.URL, TokenID: cl.TokenID, TokenSecret: cl.TokenSecret.Reveal(),
		CAFile: cl.CAFile, InsecureSkipVerify: cl.InsecureSkipVerify, Timeout: cl.Timeout, MaxRetries: -1,
	})
	if err != nil {
		r.add(Fail, area, "", "%v", err)
		return
	}
	vms, err := client.ClusterVMs(ctx)
	if err != nil {
		r.add(Fail, area, "", "listing VMs: %v", err)
		return
	}

	// Match Nodes to VMs: by providerID in this region, else by systemUUID.
	type match struct {
		node *corev1.Node
		vm   pve.VMResource
		cfg  *pve.VMConfig
	}
	var matches []match
	byID := map[int]pve.VMResource{}
	for _, v := range vms {
		if v.Type == "qemu" && !v.Template {
			byID[v.VMID] = v
		}
	}
	configs := map[int]*pve.VMConfig{}
	vmConfig := func(v pve.VMResource) (*pve.VMConfig, error) {
		if c, ok := configs[v.VMID]; ok {
			return c, nil
		}
		c, err := client.VMConfig(ctx, v.Ref())
		if err == nil {
			configs[v.VMID] = c
		}
		return c, err
	}
	for i := range nodes {
		n := &nodes[i]
		if matched[n.Name] {
			continue
		}
		if n.Spec.ProviderID != "" {
			reg, vmid, err := instances.ParseProviderID(n.Spec.ProviderID)
			if err != nil || reg != cl.Region {
				continue
			}
			v, ok := byID[vmid]
			if !ok {
				r.add(Fail, "node "+n.Name, "if the VM exists, give the token VM.Audit on /vms/"+strconv.Itoa(vmid)+"; if not, delete the Node",
					"providerID %s names VM %d, which the token does not see in region %s", n.Spec.ProviderID, vmid, cl.Region)
				matched[n.Name] = true
				continue
			}
			c, err := vmConfig(v)
			if err != nil {
				r.add(Fail, "node "+n.Name, "", "reading VM %d's config: %v", vmid, err)
				matched[n.Name] = true
				continue
			}
			matches = append(matches, match{n, v, c})
			matched[n.Name] = true
			continue
		}
		uuid := strings.ToLower(strings.TrimSpace(n.Status.NodeInfo.SystemUUID))
		if uuid == "" {
			continue
		}
		for _, v := range byID {
			c, err := vmConfig(v)
			if err != nil {
				continue
			}
			if strings.ToLower(instances.ParseSMBIOS1(c.SMBIOS1).UUID) == uuid {
				matches = append(matches, match{n, v, c})
				matched[n.Name] = true
				break
			}
		}
	}
	sort.Slice(matches, func(i, j int) bool { return matches[i].node.Name < matches[j].node.Name })

	// Privileges, named exactly, on the matched VMs and the root.
	var vmids []int
	for _, m := range matches {
		vmids = append(vmids, m.vm.VMID)
	}
	needs := Needs(vmids, cfg.Firewall.Enabled, cfg.Instances.Addresses == config.AddressesProvidedAndAgent, major)
	paths := []string{}
	seen := map[string]bool{}
	for _, n := range needs {
		if !seen[n.Path] {
			seen[n.Path] = true
			paths = append(paths, n.Path)
		}
	}
	if have, err := a.permissions(ctx, cl.TokenID, paths); err != nil {
		r.add(Warn, area, "run `pveum user token permissions "+strings.Replace(cl.TokenID, "!", " ", 1)+"` on a Proxmox host and compare with docs/proxmox-setup.md",
			"could not read the token's permissions (GET /access/permissions): %v", err)
	} else if missing := Missing(needs, have); len(missing) > 0 {
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
		r.add(Fail, area, strings.Join(fixes, "\n"), "token %s lacks privileges: %s", cl.TokenID, strings.Join(lines, "; "))
	} else {
		r.add(OK, area, "", "token holds every privilege pvelb needs (%d checked)", len(needs))
	}

	// Each matched VM's firewall and IP filter.
	for _, m := range matches {
		area := "node " + m.node.Name
		r.add(OK, area, "", "VM %d %q on %s (%s)", m.vm.VMID, m.vm.Name, m.vm.Node, m.vm.Status)
		if !cfg.Firewall.Enabled && len(cfg.Firewall.NICs) == 0 {
			continue
		}
		opts, err := client.VMFirewallOptions(ctx, m.vm.Ref())
		if err != nil {
			r.add(Fail, area, "the token needs VM.Audit on /vms/"+strconv.Itoa(m.vm.VMID), "reading VM firewall options: %v", err)
			continue
		}
		sets, err := client.IPSets(ctx, pve.VMScope(m.vm.Ref()))
		if err != nil {
			r.add(Fail, area, "the token needs VM.Audit on /vms/"+strconv.Itoa(m.vm.VMID), "listing VM IPSets: %v", err)
			continue
		}
		have := map[string]bool{}
		for _, s := range sets {
			have[s.Name] = true
		}
		nics := cfg.Firewall.NICs
		if len(nics) == 0 {
			nics = []string{config.DefaultNIC}
		}
		for _, nic := range nics {
			n := NIC{Name: nic, VMFirewall: opts.Enable, IPFilter: opts.IPFilter, OwnIPs: nodeIPs(m.node)}
			idx, _ := strconv.Atoi(strings.TrimPrefix(nic, "net"))
			if raw, ok := m.cfg.Nets[idx]; ok {
				n.Present = true
				if nc, err := pve.ParseNet(raw); err == nil {
					n.Firewall = nc.Firewall
				}
			}
			set := pve.IPFilterSet(nic)
			if have[set] {
				n.SetExists = true
				if n.Entries, err = client.IPSetEntries(ctx, pve.VMScope(m.vm.Ref()), set); err != nil {
					r.add(Fail, area, "", "reading %s: %v", set, err)
					continue
				}
			}
			sev, msg, fix := AssessNIC(n, cfg.Firewall.Enabled, fmt.Sprintf("/nodes/%s/qemu/%d", m.vm.Node, m.vm.VMID))
			r.add(sev, area, fix, "%s", msg)
		}
	}
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
