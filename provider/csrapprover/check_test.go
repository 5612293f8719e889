package csrapprover

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"

	certv1 "k8s.io/api/certificates/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cloudproviderapi "k8s.io/cloud-provider/api"
)

// NewRequestPEM makes a PEM CSR as a kubelet does for its serving
// certificate, from tmpl (fresh ECDSA key).
func newRequestPEM(t *testing.T, tmpl x509.CertificateRequest) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func kubeletCSR(t *testing.T, node string, mutate func(*certv1.CertificateSigningRequest, *x509.CertificateRequest)) *certv1.CertificateSigningRequest {
	t.Helper()
	tmpl := x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		DNSNames:    []string{node},
		IPAddresses: []net.IP{net.ParseIP("192.0.2.11")},
	}
	csr := &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "csr-1"},
		Spec: certv1.CertificateSigningRequestSpec{
			SignerName: certv1.KubeletServingSignerName,
			Username:   "system:node:" + node,
			Groups:     []string{"system:nodes", "system:authenticated"},
			Usages:     []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageServerAuth},
		},
	}
	if mutate != nil {
		mutate(csr, &tmpl)
	}
	if csr.Spec.Request == nil {
		csr.Spec.Request = newRequestPEM(t, tmpl)
	}
	return csr
}

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*certv1.CertificateSigningRequest, *x509.CertificateRequest)
		want   string // "" = accepted
	}{
		{"a kubelet's request", nil, ""},
		{"not a node", func(c *certv1.CertificateSigningRequest, _ *x509.CertificateRequest) { c.Spec.Username = "alice" }, "not by a Node"},
		{"not in system:nodes", func(c *certv1.CertificateSigningRequest, _ *x509.CertificateRequest) { c.Spec.Groups = nil }, "not in group system:nodes"},
		{"another node's CN", func(_ *certv1.CertificateSigningRequest, r *x509.CertificateRequest) {
			r.Subject.CommonName = "system:node:other"
		}, `subject CN "system:node:other" is not the requester`},
		{"wrong O", func(_ *certv1.CertificateSigningRequest, r *x509.CertificateRequest) {
			r.Subject.Organization = []string{"system:masters"}
		}, "subject O"},
		{"client auth", func(c *certv1.CertificateSigningRequest, _ *x509.CertificateRequest) {
			c.Spec.Usages = append(c.Spec.Usages, certv1.UsageClientAuth)
		}, `usage "client auth"`},
		{"no server auth", func(c *certv1.CertificateSigningRequest, _ *x509.CertificateRequest) {
			c.Spec.Usages = []certv1.KeyUsage{certv1.UsageDigitalSignature}
		}, "lack server auth"},
		{"URI", func(_ *certv1.CertificateSigningRequest, r *x509.CertificateRequest) {
			r.URIs = []*url.URL{{Scheme: "spiffe", Host: "x"}}
		}, "email or URI"},
		{"no names", func(_ *certv1.CertificateSigningRequest, r *x509.CertificateRequest) {
			r.DNSNames, r.IPAddresses = nil, nil
		}, "no DNS name or IP"},
		{"garbage", func(c *certv1.CertificateSigningRequest, _ *x509.CertificateRequest) { c.Spec.Request = []byte("nope") }, "no PEM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest(kubeletCSR(t, "w1", tc.mutate))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "" && r.NodeName != "w1":
				t.Fatalf("node %q", r.NodeName)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v; want %q", err, tc.want)
			case err != nil && IsRetry(err):
				t.Fatalf("%v: a malformed request is final, not retried", err)
			}
		})
	}
}

func TestCheckNode(t *testing.T) {
	initialised := func() *v1.Node {
		return &v1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "w1"},
			Spec:       v1.NodeSpec{ProviderID: "proxmox://lab/101"},
			Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
				{Type: v1.NodeInternalIP, Address: "192.0.2.11"}, {Type: v1.NodeInternalIP, Address: "2001:db8::11"},
				{Type: v1.NodeHostName, Address: "w1.example.com"},
			}},
		}
	}
	for _, tc := range []struct {
		name  string
		node  func() *v1.Node
		dns   []string
		ips   []string
		want  string
		retry bool
	}{
		{name: "its names and addresses", node: initialised, dns: []string{"w1", "w1.example.com"}, ips: []string{"192.0.2.11", "2001:db8::11"}},
		{name: "another address", node: initialised, ips: []string{"192.0.2.99"}, want: "IP address 192.0.2.99 is not one of node w1's addresses"},
		{name: "another name", node: initialised, dns: []string{"kubernetes.default"}, want: `DNS name "kubernetes.default"`},
		{name: "not initialised", node: func() *v1.Node {
			n := initialised()
			n.Spec.Taints = []v1.Taint{{Key: cloudproviderapi.TaintExternalCloudProvider, Effect: v1.TaintEffectNoSchedule}}
			return n
		}, ips: []string{"192.0.2.11"}, want: "not initialised", retry: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Request{NodeName: "w1", X509: &x509.CertificateRequest{DNSNames: tc.dns}}
			for _, ip := range tc.ips {
				r.X509.IPAddresses = append(r.X509.IPAddresses, net.ParseIP(ip))
			}
			err := CheckNode(r, tc.node())
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v; want %q", err, tc.want)
			}
			if err != nil && IsRetry(err) != tc.retry {
				t.Fatalf("retry = %v; want %v", IsRetry(err), tc.retry)
			}
		})
	}
}

func TestCheckVM(t *testing.T) {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}}
	node.Status.NodeInfo.SystemUUID = "6B7D1F4E-0C1A-4A53-9B0E-000000000101"
	const uuid = "6b7d1f4e-0c1a-4a53-9b0e-000000000101"
	for _, tc := range []struct {
		vm    VMFacts
		want  string
		retry bool
	}{
		{vm: VMFacts{Status: "running", UUID: uuid}},
		{vm: VMFacts{Status: "stopped", UUID: uuid}, want: "is stopped, not running"},
		{vm: VMFacts{Status: "unknown", UUID: uuid}, want: "does not answer", retry: true},
		{vm: VMFacts{Status: "running", UUID: "00000000-0000-0000-0000-000000000001"}, want: "has smbios1 uuid"},
	} {
		err := CheckVM(node, tc.vm)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: err = %v; want %q", tc.vm, err, tc.want)
		}
		if err != nil && IsRetry(err) != tc.retry {
			t.Errorf("%+v: retry = %v; want %v", tc.vm, IsRetry(err), tc.retry)
		}
	}
}
