package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/pvelb/pvelb/test/apiserver"
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
	netlab.RequireTools(t, "ping", "curl", "nft", "iptables", "ip6tables", "iptables-save", "ip6tables-save")

	bin, root := labBinaries(t)
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
		"a pod's answer through the VIP":       `client\$ curl http://` + q + `/ .*\n\s+pod=web-\w+-\w+ node=node\d from=192\.0\.2\.\d+`,
		"drops while the entry is missing":     `drop counter of VM 10\d: \+[1-9]\d* frame\(s\) since the deletion`,
		"the repair and the next answer":       `pvelb-ccm wrote ` + q + ` back into VM 10\d's ipfilter-net0 [\d.]+m?s after the deletion[^\n]*\n[^\n]*client\$ curl[^\n]*\n\s+pod=web-`,
		"the answering MAC mapped to a node":   q + ` answered: MAC 02:00:5e:00:00:[0-9a-f]{2} is node\d, Proxmox VM 10\d on pve\d`,
		"a failover measured by HTTP":          `failover measured by HTTP: \d+ms without an answer \(\d+ of \d+ requests failed\)`,
		"the ping's part of the failover":      `failover measured by ping: `,
		"Nodes initialised with providerIDs":   `node1\s+proxmox://lab/101\s+lab\s+pve1`,
		"a kubeconfig for kubectl on the host": `export KUBECONFIG=` + regexp.QuoteMeta(state) + `/kubeconfig`,
		"the teardown":                         `Lab torn down`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %s (/%s/)", what, re)
		}
	}
	if m := regexp.MustCompile(`failover measured by HTTP: (\d+)ms`).FindStringSubmatch(text); m != nil {
		t.Logf("failover gap (HTTP): %sms", m[1])
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

// labBinaries returns a directory with every binary the lab runs, as `make
// build kube-bins` leaves bin/, and the repository root.
func labBinaries(t *testing.T) (bin, root string) {
	t.Helper()
	bin = t.TempDir()
	// EnsureBinaries builds kube-proxy and kube-controller-manager only when
	// asked; the lab runs both.
	kubeBins, err := apiserver.EnsureBinaries(context.Background(), nil, "kube-proxy", "kube-controller-manager")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kube-proxy", "kube-controller-manager"} {
		if err := os.Symlink(filepath.Join(kubeBins, b), filepath.Join(bin, b)); err != nil {
			t.Fatal(err)
		}
	}
	if root, err = apiserver.RepoRoot(); err != nil {
		t.Fatal(err)
	}
	// pvelb's own commands from $PVELB_BIN_DIR (`make build`), else built
	// here. Not through test/e2e: this test should not need that package
	// to compile, nor wait for its build.
	// The announcer runs pvelb-bgp-speaker beside it: a build without it
	// leaves every announcer failing at start.
	commands := []string{"pvelb-ccm", "pvelb-announcer", "pvelb-bgp-speaker", "pvelbctl"}
	own := os.Getenv("PVELB_BIN_DIR")
	for _, b := range commands {
		if _, err := os.Stat(filepath.Join(own, b)); own == "" || err != nil {
			own = filepath.Join(t.TempDir(), "pvelb")
			args := []string{"build", "-o", own + "/"}
			for _, c := range commands {
				args = append(args, "./cmd/"+c)
			}
			build := exec.Command("go", args...)
			build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("building pvelb's commands: %v\n%s", err, out)
			}
			break
		}
	}
	for _, b := range commands {
		if err := os.Symlink(filepath.Join(own, b), filepath.Join(bin, b)); err != nil {
			t.Fatal(err)
		}
	}
	return bin, root
}

// TestLabInteractive runs the lab as `make demo` leaves it, waiting for
// kubectl: the printed KUBECONFIG works from the host, `pvelbctl doctor`
// finds nothing to fix and `pvelbctl status` names the answering node
// (both run inside the lab network, where the Proxmox API is), and Ctrl-C
// tears everything down.
func TestLabInteractive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole lab")
	}
	netlab.RequirePrivileged(t)
	netlab.RequireTools(t, "ping", "curl")
	bin, root := labBinaries(t)
	state := filepath.Join(t.TempDir(), "state")
	out := &lockedBuffer{}
	cmd := exec.Command(filepath.Join(bin, "pvelbctl"), "lab", "--no-failover",
		"--bin-dir", bin, "--repo-dir", root, "--state-dir", state, "--api-port", "0")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
			}
		}
		if t.Failed() {
			t.Logf("pvelbctl lab output:\n%s", out.String())
		}
	}()
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(out.String(), "Press Ctrl-C") {
		select {
		case err := <-done:
			t.Fatalf("pvelbctl lab exited early: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the lab did not become ready in 3 minutes")
		}
	}

	// kubectl on the host, through the loopback forwarder.
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(state, "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(rc)
	ctx := context.Background()
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 3 {
		t.Fatalf("nodes through the host kubeconfig: %v (%v)", nodes, err)
	}
	svc, err := kube.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || len(svc.Status.LoadBalancer.Ingress) == 0 {
		t.Fatalf("Service web through the host kubeconfig: %v (%v)", svc, err)
	}
	vip := svc.Status.LoadBalancer.Ingress[0].IP

	ctl := regexp.MustCompile(`(pvl\d+-\d+-ctl)`).FindString(out.String())
	inLab := func(args ...string) (string, error) {
		c := exec.Command("ip", append([]string{"netns", "exec", ctl, filepath.Join(bin, "pvelbctl")}, args...)...)
		b, err := c.CombinedOutput()
		return string(b), err
	}
	kc := filepath.Join(state, "apiserver", "kubeconfig")
	rep, err := inLab("doctor", "--kubeconfig", kc, "--cloud-config", filepath.Join(state, "cloud-config.yaml"))
	t.Logf("pvelbctl doctor:\n%s", rep)
	if err != nil {
		t.Errorf("doctor found problems in the lab: %v", err)
	}
	for _, want := range []string{"token holds every privilege", "CRD ippools.pvelb.io installed", "1 IPPool(s), no overlaps",
		"ipfilter-net0 holds the VM's own addresses (5 entries, 1 written by pvelb)", "All "} {
		if !strings.Contains(rep, want) {
			t.Errorf("doctor report lacks %q", want)
		}
	}
	st, err := inLab("status", "--kubeconfig", kc)
	t.Logf("pvelbctl status:\n%s", st)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if !regexp.MustCompile(`default\s+web\s+\(default\)\s+` + regexp.QuoteMeta(vip) + `\s+demo\s+L2\s+node\d\s+pve\d+/\d+`).MatchString(st) {
		t.Errorf("status does not show web's VIP %s from pool demo answered by a node", vip)
	}
	// The lab shows the ServiceAnnouncement as kubectl get svcann does.
	if !regexp.MustCompile(`kubectl get svcann -l pvelb.io/service-name=web: web\.node\d .*Proxmox host pve\d+  VM \d+`).MatchString(out.String()) {
		t.Errorf("the lab does not show who answers from the ServiceAnnouncement:\n%s", out.String())
	}

	// Ctrl-C tears everything down and exits 0.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("pvelbctl lab after Ctrl-C: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("pvelbctl lab still running 60s after Ctrl-C")
	}
	if !strings.Contains(out.String(), "Lab torn down") {
		t.Error("no teardown message after Ctrl-C")
	}
	if m, _ := filepath.Glob("/run/netns/" + strings.TrimSuffix(ctl, "-ctl") + "-*"); len(m) > 0 {
		t.Errorf("namespaces left after Ctrl-C: %v", m)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), state) {
			t.Errorf("process %s left behind: %s", filepath.Dir(p), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
