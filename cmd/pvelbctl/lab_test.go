package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/e2e"
	"github.com/pvelb/pvelb/test/netlab"
)

// TestLabDemo runs `pvelbctl lab --exit-after-demo` as a person would run
// `make demo`, checks that what it prints shows pvelb working (an
// EXTERNAL-IP, the VIP in the Proxmox IPSets, a ping that got through, a
// measured failover), and that nothing of the lab is left afterwards.
func TestLabDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole lab")
	}
	netlab.RequirePrivileged(t)
	netlab.RequireTools(t, "ping", "curl")

	// One directory with every binary, as `make build kube-bins` leaves bin/.
	bin := t.TempDir()
	kubeBins, err := apiserver.EnsureBinaries(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if err := os.Symlink(filepath.Join(kubeBins, b), filepath.Join(bin, b)); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{"pvelb-ccm", "pvelb-announcer", "pvelbctl"} {
		if err := os.Symlink(e2e.Binary(t, b), filepath.Join(bin, b)); err != nil {
			t.Fatal(err)
		}
	}
	root, err := apiserver.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pvelbctl"), "lab", "--exit-after-demo",
		"--bin-dir", bin, "--repo-dir", root, "--state-dir", state, "--api-port", "0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	text := string(out)
	t.Logf("pvelbctl lab output:\n%s", text)
	if err != nil {
		t.Fatalf("pvelbctl lab: %v", err)
	}

	vip := regexp.MustCompile(`EXTERNAL-IP (192\.0\.2\.\d+) assigned`).FindStringSubmatch(text)
	if vip == nil {
		t.Fatal("no EXTERNAL-IP in the output")
	}
	q := regexp.QuoteMeta(vip[1])
	for what, re := range map[string]string{
		"the VIP in the cluster IPSet":         `IPSet pvelb-vips[^\n]*:\n\s+\[pvelb\]\s+` + q + `\s+pvelb: default/web`,
		"the VIP in a VM's ipfilter-net0":      `IPSet ipfilter-net0:\n\s+\[yours\]\s+192\.0\.2\.\d+\s+node address\n\s+\[pvelb\]\s+` + q,
		"a successful ping":                    `3 packets transmitted, 3 received, 0% packet loss`,
		"the answering MAC mapped to a node":   q + ` answered: MAC 02:00:5e:00:00:[0-9a-f]{2} is node\d, Proxmox VM 10\d on pve\d`,
		"a measured failover":                  `failover measured by the client: \d+ms without a reply \(\d+ of \d+ pings lost\)`,
		"Nodes initialised with providerIDs":   `node1\s+proxmox://lab/101\s+lab\s+pve1`,
		"a kubeconfig for kubectl on the host": `export KUBECONFIG=` + regexp.QuoteMeta(state) + `/kubeconfig`,
		"the teardown":                         `Lab torn down`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %s (/%s/)", what, re)
		}
	}
	if m := regexp.MustCompile(`failover measured by the client: (\d+)ms`).FindStringSubmatch(text); m != nil {
		t.Logf("failover gap: %sms", m[1])
	}

	// Nothing of the lab remains: the namespaces named after pvelbctl's
	// pid, and every process that used the state directory.
	ns := regexp.MustCompile(`(pvl\d+-\d+)-ctl`).FindStringSubmatch(text)
	if ns == nil {
		t.Fatal("no lab namespace named in the output")
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ns[1]+"-") {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), state) {
			t.Errorf("process %s left behind: %s", filepath.Dir(p), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}
