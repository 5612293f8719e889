package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// submitCSR files a certificate request as the Node's kubelet would
// (impersonating system:node:NAME, so the apiserver records that requester).
func (l *Lab) submitCSR(t *testing.T, name, node, signer string, usages []certv1.KeyUsage, dns []string, ips ...string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		DNSNames: dns,
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(l.CP.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:node:" + node, Groups: []string{"system:nodes", "system:authenticated"}}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = kc.CertificatesV1().CertificateSigningRequests().Create(context.Background(), &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: certv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: signer,
			Usages:     usages,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating CSR %s as node %s: %v", name, node, err)
	}
}

// csrDecision waits for name's Approved or Denied condition and returns it.
func (l *Lab) csrDecision(t *testing.T, name string) certv1.CertificateSigningRequestCondition {
	t.Helper()
	var got certv1.CertificateSigningRequestCondition
	Eventually(t, 20*time.Second, "a decision on "+name, func(ctx context.Context) error {
		csr, err := l.Client.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range csr.Status.Conditions {
			if c.Type == certv1.CertificateApproved || c.Type == certv1.CertificateDenied {
				got = c
				return nil
			}
		}
		return errorf("still pending")
	})
	return got
}

// TestCCMApprovesKubeletServingCSRs: with approveKubeletServingCertificates,
// pvelb-ccm approves through the real certificates API the kubelet serving
// request that names only its Node's names and addresses, denies with the
// reason one naming another address or coming from a Node whose VM is
// stopped, and leaves other signers' requests alone.
func TestCCMApprovesKubeletServingCSRs(t *testing.T) {
	l := newLab(t)
	f, err := os.OpenFile(l.ConfigFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("  approveKubeletServingCertificates: true\n"); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	l.createNodes(t)
	l.startCCM(t)
	l.waitNodesInitialised(t)
	serving := []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageServerAuth}

	l.submitCSR(t, "good", "talos-w-1", certv1.KubeletServingSignerName, serving, []string{"talos-w-1"}, "192.0.2.12")
	if c := l.csrDecision(t, "good"); c.Type != certv1.CertificateApproved || c.Reason != "PVELBKubeletServingApproved" {
		t.Errorf("kubelet's own request: %s %s %q; want Approved", c.Type, c.Reason, c.Message)
	}

	l.submitCSR(t, "foreign-ip", "talos-w-1", certv1.KubeletServingSignerName, serving, []string{"talos-w-1"}, "192.0.2.12", "192.0.2.99")
	if c := l.csrDecision(t, "foreign-ip"); c.Type != certv1.CertificateDenied || !strings.Contains(c.Message, "192.0.2.99 is not one of node talos-w-1's addresses") {
		t.Errorf("request for another address: %s %q; want Denied naming 192.0.2.99", c.Type, c.Message)
	}

	l.PVE.SetVMStatus(103, "stopped")
	l.submitCSR(t, "stopped-vm", "talos-w-2", certv1.KubeletServingSignerName, serving, []string{"talos-w-2"}, "192.0.2.13")
	if c := l.csrDecision(t, "stopped-vm"); c.Type != certv1.CertificateDenied || !strings.Contains(c.Message, "is stopped, not running") {
		t.Errorf("request of a Node whose VM is stopped: %s %q; want Denied", c.Type, c.Message)
	}

	// Another signer: not pvelb's to decide (kube-controller-manager's
	// approvers handle kubelet client certificates).
	l.submitCSR(t, "client", "talos-w-1", certv1.KubeAPIServerClientSignerName,
		[]certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageClientAuth}, nil)
	Consistently(t, 3*time.Second, "client CSR left pending", func(ctx context.Context) error {
		csr, err := l.Client.CertificatesV1().CertificateSigningRequests().Get(ctx, "client", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(csr.Status.Conditions) > 0 {
			return errorf("decided: %+v", csr.Status.Conditions)
		}
		return nil
	})
}
