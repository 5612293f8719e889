// Package apiserver runs a real kube-apiserver and etcd for tests, the demo lab
// and benchmarks: built from k8s.io/kubernetes by the tools module in
// test/tools, started on loopback (or an address in a lab network namespace)
// with generated certificates, a static admin token and a kubeconfig, and
// stopped with their whole process groups even when a test fails.
package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/pvelb/pvelb/test/netlab"
)

// ServiceCIDRs are the cluster-IP ranges of the test control plane: dual-stack
// so dual-stack Services can be created, and documentation ranges only.
const ServiceCIDRs = "198.51.100.0/24,2001:db8:ffff::/112"

// AnnouncerUser is the user AnnouncerKubeconfig authenticates as, bound to
// cluster-admin. Not in system:masters: the apiserver's mandatory "exempt"
// FlowSchema takes that group's requests before any other schema, so its
// requests could not be told apart in the apiserver's metrics.
const AnnouncerUser = "lab-announcer"

// Options shape one control plane. The zero value runs on 127.0.0.1.
type Options struct {
	// BindAddress is where etcd and the apiserver listen; default 127.0.0.1.
	BindAddress string
	// Netns, when set, runs both processes inside that named network namespace
	// (`ip netns exec`), so announcers in other namespaces of a lab can reach
	// the apiserver at BindAddress.
	Netns string
	// Dir holds data, certificates, logs and the kubeconfig; a new temporary
	// directory when empty (removed by Stop).
	Dir string
	// BinDir holds kube-apiserver and etcd; default <repo>/bin, built on demand.
	BinDir string
	// ExtraArgs are appended to the kube-apiserver command line.
	ExtraArgs []string
	// Log receives the processes' output lines when set (besides the log files).
	Log io.Writer
}

// ControlPlane is a running etcd + kube-apiserver.
type ControlPlane struct {
	URL        string
	Kubeconfig string
	CAFile     string
	Token      string
	Dir        string
	Config     *rest.Config

	// AnnouncerKubeconfig authenticates as AnnouncerUser (cluster-admin):
	// announcers run with it so the apiserver's own metrics can tell their
	// requests from the controllers'.
	AnnouncerKubeconfig string

	ownDir bool
	opts   Options // as Start completed them, for components started later
	procs  []*process
	once   sync.Once
}

type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

// Start builds the binaries if needed and starts etcd and kube-apiserver, and
// returns once /readyz answers. On error everything started is stopped.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	if opts.BindAddress == "" {
		opts.BindAddress = "127.0.0.1"
	}
	if opts.BinDir == "" {
		if opts.BinDir, err = EnsureBinaries(ctx, opts.Log); err != nil {
			return nil, err
		}
	}
	cp := &ControlPlane{Dir: opts.Dir, opts: opts}
	if cp.Dir == "" {
		if cp.Dir, err = os.MkdirTemp("", "pvelb-apiserver-"); err != nil {
			return nil, err
		}
		cp.ownDir = true
	}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()

	certs, err := newPKI(cp.Dir, opts.BindAddress)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(opts, 3)
	if err != nil {
		return nil, err
	}
	etcdClient := "http://" + net.JoinHostPort(opts.BindAddress, strconv.Itoa(ports[0]))
	etcdPeer := "http://" + net.JoinHostPort(opts.BindAddress, strconv.Itoa(ports[1]))
	if err := cp.spawn(opts, "etcd", filepath.Join(opts.BinDir, "etcd"),
		"--name=pvelb-test",
		"--data-dir="+filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls="+etcdClient,
		"--advertise-client-urls="+etcdClient,
		"--listen-peer-urls="+etcdPeer,
		"--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=pvelb-test="+etcdPeer,
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	); err != nil {
		return nil, err
	}

	cp.Token = "pvelb-test-admin-token"
	tokenFile := filepath.Join(cp.Dir, "tokens.csv")
	announcerToken := "pvelb-test-announcer-token"
	tokens := cp.Token + `,pvelb-admin,pvelb-admin,"system:masters"` + "\n" +
		announcerToken + "," + AnnouncerUser + "," + AnnouncerUser + "\n"
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		return nil, err
	}
	args := []string{
		"--etcd-servers=" + etcdClient,
		"--bind-address=" + opts.BindAddress,
		"--advertise-address=" + opts.BindAddress,
		"--secure-port=" + strconv.Itoa(ports[2]),
		"--tls-cert-file=" + certs.CertFile,
		"--tls-private-key-file=" + certs.KeyFile,
		"--client-ca-file=" + certs.CAFile,
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + certs.SAPubKeyFile,
		"--service-account-signing-key-file=" + certs.SAKeyFile,
		"--service-cluster-ip-range=" + ServiceCIDRs,
		"--cert-dir=" + filepath.Join(cp.Dir, "certs"),
		"--allow-privileged=true",
		// The kubernetes Service endpoints would point at loopback: nothing uses them.
		"--endpoint-reconciler-type=none",
		"--v=1",
	}
	args = append(args, opts.ExtraArgs...)
	if err := cp.spawn(opts, "kube-apiserver", filepath.Join(opts.BinDir, "kube-apiserver"), args...); err != nil {
		return nil, err
	}

	cp.URL = "https://" + net.JoinHostPort(opts.BindAddress, strconv.Itoa(ports[2]))
	cp.CAFile = certs.CAFile
	cp.Config = &rest.Config{
		Host:            cp.URL,
		BearerToken:     cp.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: certs.CAPEM},
		QPS:             200,
		Burst:           400,
	}
	cp.Kubeconfig = filepath.Join(cp.Dir, "kubeconfig")
	if err := writeKubeconfig(cp.Kubeconfig, cp.URL, certs.CAPEM, cp.Token); err != nil {
		return nil, err
	}
	cp.AnnouncerKubeconfig = filepath.Join(cp.Dir, "kubeconfig-announcer")
	if err := writeKubeconfig(cp.AnnouncerKubeconfig, cp.URL, certs.CAPEM, announcerToken); err != nil {
		return nil, err
	}
	if opts.Netns == "" {
		if err := waitReady(ctx, cp, certs.CAPEM); err != nil {
			return nil, err
		}
	} else if err := waitReadyNetns(ctx, cp, opts.Netns); err != nil {
		return nil, err
	}
	if err := bindAnnouncer(ctx, cp); err != nil {
		return nil, err
	}
	return cp, nil
}

// bindAnnouncer makes AnnouncerUser a cluster-admin. The apiserver creates
// the cluster-admin ClusterRole while it starts, possibly after /readyz.
func bindAnnouncer(ctx context.Context, cp *ControlPlane) error {
	cfg := rest.CopyConfig(cp.Config)
	if ns := cp.opts.Netns; ns != "" {
		// The apiserver listens inside the namespace: dial from there.
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := netlab.InNetns(ns, func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: AnnouncerUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: AnnouncerUser}},
	}
	_, err = kube.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil // a control plane started again on the same etcd data
	}
	return err
}

// Client returns a clientset for the admin user.
func (cp *ControlPlane) Client() kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(cp.Config)
}

// Stop kills both process groups and removes a temporary directory. It is
// safe to call more than once.
func (cp *ControlPlane) Stop() {
	cp.once.Do(func() {
		// apiserver first so it does not log a storm of etcd errors.
		for i := len(cp.procs) - 1; i >= 0; i-- {
			stopProcess(cp.procs[i])
		}
		if cp.ownDir {
			_ = os.RemoveAll(cp.Dir)
		}
	})
}

func (cp *ControlPlane) spawn(opts Options, name, bin string, args ...string) error {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s binary: %w (run `make kube-bins`)", name, err)
	}
	if opts.Netns != "" {
		args = append([]string{"netns", "exec", opts.Netns, bin}, args...)
		bin = "ip"
	}
	logf, err := os.Create(filepath.Join(cp.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	var out io.Writer = logf
	if opts.Log != nil {
		out = io.MultiWriter(logf, prefixWriter(opts.Log, name))
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group so Stop takes down `ip netns exec` and its child;
	// Pdeathsig so a crashed test binary does not leave servers behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); _ = logf.Close(); close(p.done) }()
	cp.procs = append(cp.procs, p)
	return nil
}

func stopProcess(p *process) {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	// The group may hold children of `ip netns exec` that outlive the leader.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

// freePorts asks the kernel for unused ports. A port could be taken between
// this call and the server's bind; the window is tiny for tests on one host.
func freePorts(opts Options, n int) ([]int, error) {
	if opts.Netns != "" {
		// Inside a fresh namespace nothing else listens: fixed ports are free.
		return []int{2379, 2380, 6443}[:n], nil
	}
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(opts.BindAddress, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func writeKubeconfig(path, server string, ca []byte, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["pvelb-test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["pvelb-admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["pvelb-test"] = &clientcmdapi.Context{Cluster: "pvelb-test", AuthInfo: "pvelb-admin"}
	cfg.CurrentContext = "pvelb-test"
	return clientcmd.WriteToFile(*cfg, path)
}

const readyTimeout = 90 * time.Second

func waitReady(ctx context.Context, cp *ControlPlane, ca []byte) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	return cp.poll(ctx, "kube-apiserver", func(ctx context.Context) string {
		return getOK(ctx, hc, cp.URL+"/readyz", "Bearer "+cp.Token)
	})
}

// waitReadyNetns polls from inside the namespace: the host cannot reach it.
func waitReadyNetns(ctx context.Context, cp *ControlPlane, netns string) error {
	return cp.poll(ctx, "kube-apiserver in netns "+netns, func(ctx context.Context) string {
		return curlOK(ctx, netns, "--cacert", cp.CAFile, "-H", "Authorization: Bearer "+cp.Token, cp.URL+"/readyz")
	})
}

// poll calls probe every 200 ms until it returns "" (healthy), a process of
// the control plane exits, or readyTimeout passes; probe's last answer names
// what was wrong.
func (cp *ControlPlane) poll(ctx context.Context, name string, probe func(context.Context) string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		last := probe(ctx)
		if last == "" {
			return nil
		}
		if err := cp.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %s (logs in %s)", name, readyTimeout, last, cp.Dir)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// getOK GETs url and returns "" on 200, else what came back.
func getOK(ctx context.Context, hc *http.Client, url, authorization string) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err.Error()
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return ""
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}

// curlOK fetches with curl inside netns (the test process cannot reach
// addresses there) and returns "" when the body is "ok", else what came back.
func curlOK(ctx context.Context, netns string, args ...string) string {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns, "curl", "-s", "--max-time", "2"}, args...)...).CombinedOutput()
	if err == nil && strings.TrimSpace(string(out)) == "ok" {
		return ""
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		return s
	}
	if err != nil {
		return err.Error()
	}
	return "empty answer"
}

// exited reports a process that already died, with the tail of its log, so a
// bad flag fails fast instead of after the ready timeout.
func (cp *ControlPlane) exited() error {
	for _, p := range cp.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v): %s", p.name, p.err, tailFile(filepath.Join(cp.Dir, p.name+".log"), 2000))
		default:
		}
	}
	return nil
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

type linePrefixer struct {
	w      io.Writer
	prefix string
}

func prefixWriter(w io.Writer, name string) io.Writer {
	return &linePrefixer{w: w, prefix: "[" + name + "] "}
}

func (l *linePrefixer) Write(p []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line != "" {
			_, _ = io.WriteString(l.w, l.prefix+line)
		}
	}
	return len(p), nil
}
