// Package csrapprover approves kubelet serving certificate requests
// (signer kubernetes.io/kubelet-serving), which clusters need once kubelets
// run with rotate-server-certificates (metrics-server, kubectl logs through
// a verifying apiserver). Kubernetes approves no such request by itself; the
// Talos CCM does, so a cluster switching to pvelb needs this (opt-in:
// instances.approveKubeletServingCertificates).
//
// A request is approved only when it is what the kubelet of an initialised
// Node would ask for: made by that Node's own identity, for server auth
// only, naming only the Node's names and addresses, and for a Node whose
// Proxmox VM exists, runs and carries the Node's SMBIOS UUID. Anything else
// is denied with the reason in the condition's message; what may still
// change (the Node not initialised yet, Proxmox unreachable) is retried.
package csrapprover

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	certv1 "k8s.io/api/certificates/v1"
	v1 "k8s.io/api/core/v1"
	cloudproviderapi "k8s.io/cloud-provider/api"
)

const (
	nodeUserPrefix = "system:node:"
	nodesGroup     = "system:nodes"
)

// retryError marks a refusal that may pass: the request stays pending.
type retryError struct{ error }

// Retry wraps err as a refusal worth trying again.
func Retry(err error) error { return retryError{err} }

// IsRetry reports whether err is a refusal worth trying again.
func IsRetry(err error) bool { return errors.As(err, new(retryError)) }

// Pending reports whether csr is a kubelet serving request nobody decided yet.
func Pending(csr *certv1.CertificateSigningRequest) bool {
	if csr.Spec.SignerName != certv1.KubeletServingSignerName {
		return false
	}
	for _, c := range csr.Status.Conditions {
		if c.Type == certv1.CertificateApproved || c.Type == certv1.CertificateDenied || c.Type == certv1.CertificateFailed {
			return false
		}
	}
	return true
}

// Request is a parsed kubelet serving request.
type Request struct {
	NodeName string
	X509     *x509.CertificateRequest
}

// ParseRequest checks what a request says about itself: made by a Node's
// identity (system:node:NAME in group system:nodes), a valid x509 request
// signed by its key with that same subject, asking for server auth and
// nothing beyond digital signature and key encipherment, with DNS names or
// IP addresses and no emails or URIs. Every failure is final.
func ParseRequest(csr *certv1.CertificateSigningRequest) (*Request, error) {
	name, ok := strings.CutPrefix(csr.Spec.Username, nodeUserPrefix)
	if !ok || name == "" {
		return nil, fmt.Errorf("requested by %q, not by a Node (%sNAME)", csr.Spec.Username, nodeUserPrefix)
	}
	if !slices.Contains(csr.Spec.Groups, nodesGroup) {
		return nil, fmt.Errorf("requester %q is not in group %s", csr.Spec.Username, nodesGroup)
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("spec.request holds no PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("spec.request: %v", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("spec.request: signature: %v", err)
	}
	if req.Subject.CommonName != csr.Spec.Username {
		return nil, fmt.Errorf("subject CN %q is not the requester %q", req.Subject.CommonName, csr.Spec.Username)
	}
	if !slices.Equal(req.Subject.Organization, []string{nodesGroup}) {
		return nil, fmt.Errorf("subject O %q, want [%s]", req.Subject.Organization, nodesGroup)
	}
	serverAuth := false
	for _, u := range csr.Spec.Usages {
		switch u {
		case certv1.UsageServerAuth:
			serverAuth = true
		case certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment:
		default:
			return nil, fmt.Errorf("usage %q is not one of a serving certificate's (digital signature, key encipherment, server auth)", u)
		}
	}
	if !serverAuth {
		return nil, errors.New("usages lack server auth")
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return nil, errors.New("asks for email or URI names; a kubelet serving certificate has DNS names and IP addresses only")
	}
	if len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return nil, errors.New("names no DNS name or IP address")
	}
	return &Request{NodeName: name, X509: req}, nil
}

// CheckNode checks the request's names against its Node: the Node must be
// initialised (its addresses come from pvelb then; before, the request is
// retried), every DNS name must be the Node's name or one of its Hostname
// or DNS addresses, and every IP one of its InternalIP or ExternalIP
// addresses.
func CheckNode(r *Request, node *v1.Node) error {
	if node.Spec.ProviderID == "" || slices.ContainsFunc(node.Spec.Taints, func(t v1.Taint) bool {
		return t.Key == cloudproviderapi.TaintExternalCloudProvider
	}) {
		return Retry(fmt.Errorf("node %s is not initialised by pvelb yet", node.Name))
	}
	dns := map[string]bool{node.Name: true}
	ips := map[string]bool{}
	for _, a := range node.Status.Addresses {
		switch a.Type {
		case v1.NodeHostName, v1.NodeInternalDNS, v1.NodeExternalDNS:
			dns[a.Address] = true
		case v1.NodeInternalIP, v1.NodeExternalIP:
			if ip := net.ParseIP(a.Address); ip != nil {
				ips[ip.String()] = true
			}
		}
	}
	for _, d := range r.X509.DNSNames {
		if !dns[d] {
			return fmt.Errorf("DNS name %q is not node %s's name or one of its addresses", d, node.Name)
		}
	}
	for _, ip := range r.X509.IPAddresses {
		if !ips[ip.String()] {
			return fmt.Errorf("IP address %s is not one of node %s's addresses", ip, node.Name)
		}
	}
	return nil
}

// VMFacts is what Proxmox says of a Node's VM.
type VMFacts struct {
	ProviderID string
	Status     string // "running", "stopped", "unknown"
	UUID       string // smbios1 uuid, lowercase
}

// CheckVM checks the Node's VM: it runs, and carries the SMBIOS UUID the
// Node's kubelet reported (a request from a Node whose VM was replaced
// under its name is refused).
func CheckVM(node *v1.Node, vm VMFacts) error {
	switch vm.Status {
	case "running":
	case "unknown":
		return Retry(fmt.Errorf("VM %s is on a Proxmox host that does not answer", vm.ProviderID))
	default:
		return fmt.Errorf("VM %s is %s, not running", vm.ProviderID, vm.Status)
	}
	uuid := strings.ToLower(strings.TrimSpace(node.Status.NodeInfo.SystemUUID))
	if uuid == "" {
		return Retry(fmt.Errorf("node %s reports no systemUUID yet", node.Name))
	}
	if uuid != vm.UUID {
		return fmt.Errorf("node %s reports systemUUID %s but its VM %s has smbios1 uuid %q", node.Name, uuid, vm.ProviderID, vm.UUID)
	}
	return nil
}
