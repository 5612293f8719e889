// Package names is the one home of the names pvelb shares with users and
// between its binaries: annotations, labels, the loadBalancerClass,
// finalizers, the resources of its CRDs and the reasons of its Events, with
// the readers that turn a Service annotation or a dynamic-informer object
// into typed values. docs/reference.md lists every entry of Registry, and
// docs/docs_test.go checks that it does, so a new name is one line here and
// one row there.
package names

import (
	"crypto/sha256"
	"encoding/hex"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

// Class is the loadBalancerClass served by pvelb's own class controller.
const Class = "pvelb.io/loadbalancer"

// ConfigMapFirewallVMs is the ConfigMap, in pvelb-ccm's namespace
// (POD_NAMESPACE), recording the Proxmox VMs that may hold pvelb's IPSet
// entries (package vmledger).
const ConfigMapFirewallVMs = "pvelb-firewall-vms"

// Service annotations a user sets to steer allocation.
const (
	// AnnotationIPs requests addresses: comma-separated, one per family for
	// dual-stack.
	AnnotationIPs = "pvelb.io/ips"
	// AnnotationPool names the one IPPool to take addresses from.
	AnnotationPool = "pvelb.io/pool"
	// AnnotationSharingKey lets Services of one namespace share an address.
	AnnotationSharingKey = "pvelb.io/sharing-key"
)

// AnnotationAllocatedPool is written by pvelb-ccm on every Service it gave
// addresses: the IPPool(s) they came from, each once, in the order of
// status.loadBalancer.ingress. It is pvelb's record, separate from what the
// user asked for (AnnotationPool); its presence marks pvelb's addresses for
// the announcer, the class controller and pvelbctl, so it lasts as long as
// the addresses do.
const AnnotationAllocatedPool = "pvelb.io/allocated-pool"

// AnnotationAdmitted is written by pvelb-ccm on a Node: what its VM's
// Proxmox IP filter lets through as source addresses (see
// loadbalancer/eligibility for the format). A Node without it never
// announces.
const AnnotationAdmitted = "pvelb.io/admitted"

// Labels pvelb adds to a Node when it is initialised (the cloud node
// controller sets additional labels only once, it does not update them).
const (
	LabelProxmoxHost = "pvelb.io/proxmox-host"
	LabelProxmoxVMID = "pvelb.io/proxmox-vmid"
)

// LabelAnnouncedService is on every ServiceAnnouncement: the name of the
// Service it is about, so `kubectl get svcann -l pvelb.io/service-name=web`
// lists who announces web.
const LabelAnnouncedService = "pvelb.io/service-name"

// LabelAnnouncingNode is on every ServiceAnnouncement: the announcing node
// (NodeLabelValue), so each announcer caches its own objects only and
// `kubectl get svcann -A -l pvelb.io/announcing-node=<node>` lists what a
// node announces.
const LabelAnnouncingNode = "pvelb.io/announcing-node"

// NodeLabelValue is node as a label value: the name itself, or for a name
// that is not a valid label value (longer than 63 characters) "sha256-"
// and the first 24 hex digits of its SHA-256.
func NodeLabelValue(node string) string {
	if len(validation.IsValidLabelValue(node)) == 0 {
		return node
	}
	sum := sha256.Sum256([]byte(node))
	return "sha256-" + hex.EncodeToString(sum[:12])
}

// LabelZone places a node on a Proxmox host, for zone-diverse failover.
const LabelZone = v1.LabelTopologyZone

// Finalizers on Services.
const (
	// FinalizerService is the standard cleanup finalizer: the cloud-provider
	// service controller's, on class-less Services.
	FinalizerService = "service.kubernetes.io/load-balancer-cleanup"
	// FinalizerClass is the class controller's cleanup finalizer. It is not
	// the standard one on purpose: the service controller takes every
	// Service carrying the standard finalizer that stops being a
	// LoadBalancer, whatever its class, and if the Service is a pvelb-class
	// LoadBalancer again by the time its worker gets to it, the service
	// controller runs its delete path: it removes the finalizer and clears
	// the status behind the class controller's back.
	FinalizerClass = "pvelb.io/load-balancer-cleanup"
)

// The resources of pvelb's CRDs, watched through the dynamic client (no
// generated clientset needed for two kinds).
var (
	IPPools  = v1alpha1.SchemeGroupVersion.WithResource("ippools")
	BGPPeers = v1alpha1.SchemeGroupVersion.WithResource("bgppeers")
	// ServiceAnnouncements say which node announces a Service's addresses
	// (one object per Service and node, written by that node's announcer).
	ServiceAnnouncements = v1alpha1.SchemeGroupVersion.WithResource("serviceannouncements")
	// CRDs is the CustomResourceDefinition resource, for checking pvelb's
	// are installed.
	CRDs = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// CRDNames are the names of pvelb's CustomResourceDefinitions.
var CRDNames = []string{IPPools.Resource + "." + v1alpha1.GroupName, BGPPeers.Resource + "." + v1alpha1.GroupName,
	ServiceAnnouncements.Resource + "." + v1alpha1.GroupName}

// Event reasons pvelb-ccm gives on Services (besides the allocator's
// reasons, which allocation failures carry as they are).
const (
	EventAllocated        = "AllocatedAddress"
	EventAllocationFailed = "AllocationFailed"
	EventOutsidePools     = "AddressOutsidePools"
	EventNoEligibleNode   = "NoEligibleNode"
	EventFirewallFailed   = "FirewallAdmissionFailed"
	EventFirewallOK       = "FirewallAdmitted"
	EventRestoreConflict  = "AddressConflict"
	EventPartialDualStack = "PartialDualStack"
	// EventAnnotationConflict warns that a Service sets pvelb's annotation
	// and another load balancer's alias of it (or two aliases) to different
	// values: it names the one used and the ones ignored.
	EventAnnotationConflict = "AnnotationConflict"
)

// Event reasons pvelb-announcer gives on Services.
const (
	// EventAnnouncing names the node that now answers for an address; the
	// winner writes it on every takeover, so `kubectl describe service`
	// shows the current node last.
	EventAnnouncing = "Announcing"
	// EventNotAnnounced is a warning that no node may announce an address,
	// with the reason; one announcer (the first live one by name) writes it
	// when the reason appears or changes, so it does not multiply by nodes.
	EventNotAnnounced = "NotAnnounced"
	// EventAdvertising names a node that advertises an address over BGP;
	// each eligible node writes it when it starts advertising.
	EventAdvertising = "Advertising"
)

// Kind says what a registered name is.
type Kind string

const (
	KindClass      Kind = "loadBalancerClass"
	KindAnnotation Kind = "annotation"
	KindLabel      Kind = "label"
	KindFinalizer  Kind = "finalizer"
)

// Entry is one name pvelb defines, as the reference documents it.
type Entry struct {
	Name string
	Kind Kind
	On   string // the kind of object carrying it
	// SetBy is who writes it: "user" or "pvelb".
	SetBy string
}

// Registry is every pvelb.io name of the table "Annotations, labels and
// class" in docs/reference.md, in its order.
var Registry = []Entry{
	{Class, KindClass, "Service", "user"},
	{AnnotationIPs, KindAnnotation, "Service", "user"},
	{AnnotationPool, KindAnnotation, "Service", "user"},
	{AnnotationSharingKey, KindAnnotation, "Service", "user"},
	{FinalizerClass, KindFinalizer, "Service", "pvelb"},
	{AnnotationAllocatedPool, KindAnnotation, "Service", "pvelb"},
	{LabelProxmoxHost, KindLabel, "Node", "pvelb"},
	{LabelProxmoxVMID, KindLabel, "Node", "pvelb"},
	{AnnotationAdmitted, KindAnnotation, "Node", "pvelb"},
	{LabelAnnouncedService, KindLabel, "ServiceAnnouncement", "pvelb"},
	{LabelAnnouncingNode, KindLabel, "ServiceAnnouncement", "pvelb"},
}
