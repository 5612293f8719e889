package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/test/pvesim/schema"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const secret = "3f1c9c2e-5b7a-4d1e-9f00-c0ffee000001"

func TestRunServesStateOverTLS(t *testing.T) {
	dir, err := schema.FindDir()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		if os.Getenv("CI") != "" {
			t.Fatal(err) // CI has ../shared: a missing schema is a broken checkout
		}
		t.Skip(err)
	}
	tmp := t.TempDir()
	state := `
tokens:
  - id: pvelb@pve!ccm
    secretFile: token.secret
vms:
  - vmid: 100
    node: pve1
    name: talos-cp-1
    nets: {net0: "virtio=BC:24:11:AA:BB:01,bridge=vmbr0,firewall=1"}
    agent: [{name: eth0, mac: "BC:24:11:AA:BB:01", addrs: [192.0.2.10/24]}]
    firewall: {enable: true, ipfilter: true}
ipsets:
  - vmid: 100
    name: ipfilter-net0
    entries: [{cidr: 192.0.2.10/32}]
`
	must(t, os.WriteFile(filepath.Join(tmp, "state.yaml"), []byte(state), 0o600))
	must(t, os.WriteFile(filepath.Join(tmp, "token.secret"), []byte(secret+"\n"), 0o600))
	caFile := filepath.Join(tmp, "ca.pem")

	logs := &syncBuf{}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	klog.SetOutput(logs)
	t.Cleanup(func() { klog.SetOutput(os.Stderr); _ = fs.Set("logtostderr", "true") })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	urlc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--state", filepath.Join(tmp, "state.yaml"),
			"--ca-out", caFile, "--schema", filepath.Join(dir, schema.PVE9File)}, func(u string) { urlc <- u })
	}()
	var base string
	select {
	case base = <-urlc:
	case err := <-done:
		t.Fatalf("run ended: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("pvesim did not start")
	}

	pem, err := os.ReadFile(caFile)
	must(t, err)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("--ca-out holds no certificate")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(path, auth string) (string, []byte) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Status, b
	}
	status, body := get("/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0", "PVEAPIToken=pvelb@pve!ccm="+secret)
	var res struct {
		Data []struct{ CIDR string }
	}
	must(t, json.Unmarshal(body, &res))
	if status != "200 OK" || len(res.Data) != 1 || res.Data[0].CIDR != "192.0.2.10" {
		t.Fatalf("%s %s", status, body)
	}
	if status, _ := get("/nodes/pve1/qemu/100/firewall/ipset/nope", "PVEAPIToken=pvelb@pve!ccm="+secret); status != "500 no such IPSet 'nope'" {
		t.Errorf("custom reason phrase lost: %q", status)
	}
	if status, _ := get("/version", ""); status != "401 No ticket" {
		t.Errorf("no auth: %q", status)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no graceful shutdown")
	}
	klog.Flush()
	out := logs.String()
	if !strings.Contains(out, base) || !strings.Contains(out, "pvelb@pve!ccm") {
		t.Errorf("log lacks URL or token ID:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("log leaks the token secret:\n%s", out)
	}
}

func TestFlagAndStateErrors(t *testing.T) {
	tmp := t.TempDir()
	bad := filepath.Join(tmp, "bad.yaml")
	must(t, os.WriteFile(bad, []byte("tokens: [{id: a@pve!bb, secret: s}]\nvms: [{vmid: 100, node: pve1, bogus: 1}]\n"), 0o600))
	badAgent := filepath.Join(tmp, "agent.yaml")
	must(t, os.WriteFile(badAgent, []byte("tokens: [{id: a@pve!bb, secret: s}]\nvms: [{vmid: 100, node: pve1, agent: [{name: e, addrs: [nope]}]}]\n"), 0o600))
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", "x"}, "--tls-cert and --tls-key"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"--state", bad}, "bogus"},
		{[]string{"--state", badAgent}, "vms[0].agent[0].addrs[0]"},
		{[]string{}, "--token-out"},
	}
	for _, c := range cases {
		err := run(context.Background(), c.args, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want it to mention %q", c.args, err, c.want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
