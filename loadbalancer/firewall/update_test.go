package firewall

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

// updatingClient adds EntryUpdater to the real client with a plain PUT
// .../ipset/{name}/{cidr} to the simulator, so the reconciler's in-place
// comment update (digest-guarded, re-read after earlier writes) is exercised
// against the schema-checked server even while pve.Client has no such call.
type updatingClient struct {
	*recordingClient
	sim  *pvesim.TestServer
	http *http.Client
	puts atomic.Int32
}

func newUpdatingClient(t *testing.T, e *env) *updatingClient {
	pem, err := os.ReadFile(e.sim.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA in ", e.sim.CAFile)
	}
	return &updatingClient{recordingClient: e.wrapped, sim: e.sim,
		http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

func (c *updatingClient) UpdateIPSetEntry(ctx context.Context, scope pve.Scope, name string, entry pve.IPSetEntry) error {
	cidr, err := pve.NormalizeCIDR(entry.CIDR)
	if err != nil {
		return err
	}
	path := "/cluster/firewall/ipset/"
	if scope.VM != nil {
		path = fmt.Sprintf("/nodes/%s/qemu/%d/firewall/ipset/", scope.VM.Node, scope.VM.VMID)
	}
	path += name + "/" + url.PathEscape(cidr)
	form := url.Values{"comment": {entry.Comment}}
	if entry.Digest != "" {
		form.Set("digest", entry.Digest)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.sim.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "PVEAPIToken="+c.sim.TokenID+"="+c.sim.TokenSecret)
	res, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	c.puts.Add(1)
	if res.StatusCode != http.StatusOK {
		reason := strings.TrimPrefix(res.Status, fmt.Sprint(res.StatusCode)+" ")
		return &pve.Error{Method: http.MethodPut, Path: path, StatusCode: res.StatusCode, Reason: reason + " " + string(body)}
	}
	return nil
}

func TestSimSharedIPCommentUpdatedInPlace(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:1])
	uc := newUpdatingClient(t, e)
	rec, err := New(map[string]pve.Client{region: uc}, Options{Metrics: NewMetrics(e.reg)})
	if err != nil {
		t.Fatal(err)
	}
	e.rec = rec
	w1 := vmScope(threeVMs[0])
	e.mustPass(e.desired(service{"default/web", []string{"192.0.2.10"}}))

	// default/api starts sharing 192.0.2.10 and brings a VIP of its own: the
	// add comes first, so the update must re-read the digest.
	d := e.desired(service{"default/web", []string{"192.0.2.10"}}, service{"default/api", []string{"192.0.2.11"}})
	d.VIPs = append(d.VIPs, VIP{Addr: addrs("192.0.2.10")[0], Services: []string{"default/api"}})
	res := e.mustPass(d)
	if n := uc.puts.Load(); n != 2 {
		t.Fatalf("%d PUTs, want 2 (cluster set and VM set)", n)
	}
	e.expect(w1, "ipfilter-net0", "198.51.100.11["+SeedComment+"]",
		"192.0.2.10[pvelb: default/api,default/web]", "192.0.2.11[pvelb: default/api]")
	e.expect(pve.ClusterScope, "pvelb-vips", "192.0.2.10[pvelb: default/api,default/web]", "192.0.2.11[pvelb: default/api]")
	if s, _ := res.Set(region, w1.VM, "ipfilter-net0"); s.Writes[ActionUpdateComment] != 1 || s.Writes[ActionAdd] != 1 {
		t.Fatalf("VM set writes = %v", s.Writes)
	}
	e.sim.ResetStats()
	if res := e.mustPass(d); res.Writes() != 0 || e.sim.Stats().Writes != 0 {
		t.Fatalf("steady state after update wrote %d times", e.sim.Stats().Writes)
	}
}

func TestSimStaleCommentLeftWithoutUpdater(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{}, Options{}, threeVMs[:1])
	e.mustPass(e.desired(service{"default/web", []string{"192.0.2.10"}}))
	d := e.desired(service{"default/web", []string{"192.0.2.10"}})
	d.VIPs = append(d.VIPs, VIP{Addr: addrs("192.0.2.10")[0], Services: []string{"default/api"}})
	e.sim.ResetStats()
	res := e.mustPass(d)
	if e.sim.Stats().Writes != 0 {
		t.Fatalf("%d writes; without an updater the entry must be left alone, not deleted and re-added", e.sim.Stats().Writes)
	}
	s, _ := res.Set(region, nil, "pvelb-vips")
	if s.State != SetInSync {
		t.Fatalf("state %s, want InSync when nothing could be written", s.State)
	}
	if !strings.Contains(strings.Join(s.Notes, "\n"), "cannot update comments") {
		t.Fatalf("notes %q do not explain the stale comment", s.Notes)
	}
	e.expect(pve.ClusterScope, "pvelb-vips", "192.0.2.10[pvelb: default/web]")
}
