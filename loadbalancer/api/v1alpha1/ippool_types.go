package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types on IPPool status.
const (
	// IPPoolReady is True when the pool is used for allocation.
	IPPoolReady = "Ready"
	// IPPoolOverlapping is True when the pool's addresses overlap another
	// pool's. Both pools are then refused (not used for new allocations):
	// picking one silently would make the outcome depend on event order.
	IPPoolOverlapping = "Overlapping"
)

// AnnounceMode says how the announcer makes a pool's addresses reachable.
// +kubebuilder:validation:Enum=arp;bgp
type AnnounceMode string

const (
	// AnnounceARP answers ARP (IPv4) and NDP (IPv6) from one elected node per address.
	AnnounceARP AnnounceMode = "arp"
	// AnnounceBGP advertises each address from every eligible node (ECMP).
	AnnounceBGP AnnounceMode = "bgp"
)

// The CEL rules below validate one entry of spec.addresses. They are spelled out
// once here as Go constants only for documentation; controller-gen reads the
// markers on the field itself.
//
// An entry is a CIDR (host bits clear) or "first-last" with both ends of one
// family and first <= last. CEL has no ordering on IP values (and the
// apiserver's cost estimator refuses string building on split results), so
// the order check finds the first bit where the two ends differ with CIDR
// functions only: the one prefix length p where last lies in first/p but
// first's and last's bit p differ; first <= last iff that bit is 0 in first.
// The prefix lengths are a literal list of strings so that every string the
// rule builds has a size the estimator can bound, and "!(a == b)" stands for
// "a != b" because the estimator has no bound for != on IP values.

// IPPoolSpec is the desired state of an IPPool.
type IPPoolSpec struct {
	// Addresses the pool hands out: CIDRs ("192.0.2.0/24", "2001:db8::/120")
	// and inclusive ranges ("192.0.2.10-192.0.2.20", "2001:db8::10-2001:db8::1f").
	// IPv4 and IPv6 may be mixed in one pool (dual-stack Services take one of each).
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=80
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || (self.indexOf('-') > 0 && self.split('-').size() == 2 && isIP(self.substring(0, self.indexOf('-'))) && isIP(self.substring(self.indexOf('-') + 1)))",messageExpression="'address ' + self + ' must be a CIDR such as 192.0.2.0/24 or a range first-last such as 192.0.2.10-192.0.2.20'",reason="FieldValueInvalid"
	// +kubebuilder:validation:items:XValidation:rule="!isCIDR(self) || cidr(self).ip() == cidr(self).masked().ip()",messageExpression="'CIDR ' + self + ' has host bits set (the address must be the first of its network)'",reason="FieldValueInvalid"
	// +kubebuilder:validation:items:XValidation:rule="!(self.indexOf('-') > 0 && self.split('-').size() == 2 && isIP(self.substring(0, self.indexOf('-'))) && isIP(self.substring(self.indexOf('-') + 1))) || !(ip(self.substring(0, self.indexOf('-'))).family() != ip(self.substring(self.indexOf('-') + 1)).family())",messageExpression="'range ' + self + ' mixes IPv4 and IPv6'",reason="FieldValueInvalid"
	// +kubebuilder:validation:items:XValidation:rule="!(self.indexOf('-') > 0 && self.split('-').size() == 2 && isIP(self.substring(0, self.indexOf('-'))) && isIP(self.substring(self.indexOf('-') + 1))) || ip(self.substring(0, self.indexOf('-'))).family() != ip(self.substring(self.indexOf('-') + 1)).family() || ip(self.substring(0, self.indexOf('-'))) == ip(self.substring(self.indexOf('-') + 1)) || ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12', '13', '14', '15', '16', '17', '18', '19', '20', '21', '22', '23', '24', '25', '26', '27', '28', '29', '30', '31', '32', '33', '34', '35', '36', '37', '38', '39', '40', '41', '42', '43', '44', '45', '46', '47', '48', '49', '50', '51', '52', '53', '54', '55', '56', '57', '58', '59', '60', '61', '62', '63', '64', '65', '66', '67', '68', '69', '70', '71', '72', '73', '74', '75', '76', '77', '78', '79', '80', '81', '82', '83', '84', '85', '86', '87', '88', '89', '90', '91', '92', '93', '94', '95', '96', '97', '98', '99', '100', '101', '102', '103', '104', '105', '106', '107', '108', '109', '110', '111', '112', '113', '114', '115', '116', '117', '118', '119', '120', '121', '122', '123', '124', '125', '126', '127', '128'].exists(p, int(p) < (ip(self.substring(0, self.indexOf('-'))).family() == 4 ? 32 : 128) && cidr(self.substring(0, self.indexOf('-')) + '/' + p).containsIP(self.substring(self.indexOf('-') + 1)) && cidr(self.substring(0, self.indexOf('-')) + '/' + ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12', '13', '14', '15', '16', '17', '18', '19', '20', '21', '22', '23', '24', '25', '26', '27', '28', '29', '30', '31', '32', '33', '34', '35', '36', '37', '38', '39', '40', '41', '42', '43', '44', '45', '46', '47', '48', '49', '50', '51', '52', '53', '54', '55', '56', '57', '58', '59', '60', '61', '62', '63', '64', '65', '66', '67', '68', '69', '70', '71', '72', '73', '74', '75', '76', '77', '78', '79', '80', '81', '82', '83', '84', '85', '86', '87', '88', '89', '90', '91', '92', '93', '94', '95', '96', '97', '98', '99', '100', '101', '102', '103', '104', '105', '106', '107', '108', '109', '110', '111', '112', '113', '114', '115', '116', '117', '118', '119', '120', '121', '122', '123', '124', '125', '126', '127', '128'][int(p) + 1]).masked().ip() == cidr(self.substring(0, self.indexOf('-')) + '/' + p).masked().ip() && !(cidr(self.substring(self.indexOf('-') + 1) + '/' + ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12', '13', '14', '15', '16', '17', '18', '19', '20', '21', '22', '23', '24', '25', '26', '27', '28', '29', '30', '31', '32', '33', '34', '35', '36', '37', '38', '39', '40', '41', '42', '43', '44', '45', '46', '47', '48', '49', '50', '51', '52', '53', '54', '55', '56', '57', '58', '59', '60', '61', '62', '63', '64', '65', '66', '67', '68', '69', '70', '71', '72', '73', '74', '75', '76', '77', '78', '79', '80', '81', '82', '83', '84', '85', '86', '87', '88', '89', '90', '91', '92', '93', '94', '95', '96', '97', '98', '99', '100', '101', '102', '103', '104', '105', '106', '107', '108', '109', '110', '111', '112', '113', '114', '115', '116', '117', '118', '119', '120', '121', '122', '123', '124', '125', '126', '127', '128'][int(p) + 1]).masked().ip() == cidr(self.substring(self.indexOf('-') + 1) + '/' + p).masked().ip()))",messageExpression="'range ' + self + ' ends before it starts (first must be <= last)'",reason="FieldValueInvalid"
	Addresses []string `json:"addresses"`

	// AutoAssign lets Services that name no pool and no address get addresses
	// from this pool. False keeps the pool for explicit requests only.
	// +optional
	// +kubebuilder:default=true
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// AvoidBuggyIPs skips IPv4 addresses ending in .0 and .255, which some
	// old clients and routers treat as network or broadcast addresses.
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`

	// AllocateTo limits which Services may get addresses from this pool.
	// +optional
	AllocateTo *AllocateTo `json:"allocateTo,omitempty"`

	// Announce says how and from which nodes the addresses are made reachable.
	// +optional
	// +kubebuilder:default={mode: "arp"}
	Announce Announce `json:"announce,omitempty"`
}

// AllocateTo limits which Services a pool serves. All set limits must match.
type AllocateTo struct {
	// Namespaces whose Services may use the pool. Empty means any.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`

	// NamespaceSelector picks the namespaces (by label) whose Services may use the pool.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// ServiceSelector picks the Services (by label) that may use the pool.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`

	// Priority orders the pools a Service may use, as MetalLB does: a lower
	// value first (1 before 2), and pools without one (0) after every pool
	// with one; then by name.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Priority int32 `json:"priority,omitempty"`
}

// Announce says how a pool's addresses are announced. It lives in the pool
// itself so a pool can never be "allocated but never announced".
// +kubebuilder:validation:XValidation:rule="self.mode == 'bgp' || (!has(self.communities) && !has(self.localPreference))",message="communities and localPreference apply only to mode bgp"
// +kubebuilder:validation:XValidation:rule="self.mode == 'arp' || !has(self.interfaces)",message="interfaces apply only to mode arp (BGP routes follow the kernel's routing)"
type Announce struct {
	// Mode is arp (ARP for IPv4 and NDP for IPv6 from one elected node per
	// address) or bgp (every eligible node advertises the address).
	// +optional
	// +kubebuilder:default=arp
	Mode AnnounceMode `json:"mode,omitempty"`

	// Interfaces to answer ARP/NDP on. Empty means the interface holding the
	// node's InternalIP.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=15
	// +kubebuilder:validation:items:Pattern=`^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$`
	// +kubebuilder:validation:items:XValidation:rule="self != '.' && self != '..'",message="interface name must not be . or .."
	Interfaces []string `json:"interfaces,omitempty"`

	// NodeSelector picks the nodes that may announce the addresses. Empty means
	// every node (minus those labelled
	// node.kubernetes.io/exclude-from-external-load-balancers).
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// Communities attached to the BGP routes: standard "65000:100", large
	// "4200000000:1:2", or a well-known name (no-export, no-advertise,
	// no-export-subconfed, no-peer, blackhole, graceful-shutdown, accept-own,
	// llgr-stale, no-llgr).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:items:XValidation:rule="self in ['no-export', 'no-advertise', 'no-export-subconfed', 'no-peer', 'blackhole', 'graceful-shutdown', 'accept-own', 'llgr-stale', 'no-llgr'] || (self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && self.split(':').all(p, int(p) <= 65535)) || (self.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && self.split(':').all(p, int(p) <= 4294967295))",messageExpression="'community ' + self + ' must be ASN:VALUE (each 0-65535), a large community A:B:C (each 0-4294967295) or a well-known name such as no-export'",reason="FieldValueInvalid"
	Communities []string `json:"communities,omitempty"`

	// LocalPreference of the BGP routes (iBGP only).
	// +optional
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	LocalPreference *uint32 `json:"localPreference,omitempty"`
}

// FamilyUsage counts a pool's addresses of one family.
//
// Total and Free are decimal strings because an IPv6 pool easily holds more
// addresses than an int64 can count (a /64 has 2^64); a capped number would
// make "free" lie. Used is the number of assigned addresses, which is bounded
// by the number of Services and fits an int64.
type FamilyUsage struct {
	// Total usable addresses (after avoidBuggyIPs), as a decimal string.
	Total string `json:"total"`
	// Used addresses (assigned to at least one Service).
	Used int64 `json:"used"`
	// Free addresses, as a decimal string.
	Free string `json:"free"`
}

// IPPoolStatus is the observed state of an IPPool, written by pvelb-ccm.
type IPPoolStatus struct {
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// IPv4 usage; absent when the pool has no IPv4 addresses.
	// +optional
	IPv4 *FamilyUsage `json:"ipv4,omitempty"`

	// IPv6 usage; absent when the pool has no IPv6 addresses.
	// +optional
	IPv6 *FamilyUsage `json:"ipv6,omitempty"`

	// Conditions: Ready, Overlapping.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPPool is a set of addresses for LoadBalancer Services and how they are announced.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipp,categories=pvelb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.announce.mode`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="V4 Used",type=integer,JSONPath=`.status.ipv4.used`
// +kubebuilder:printcolumn:name="V4 Free",type=string,JSONPath=`.status.ipv4.free`
// +kubebuilder:printcolumn:name="V6 Used",type=integer,JSONPath=`.status.ipv6.used`
// +kubebuilder:printcolumn:name="V6 Free",type=string,JSONPath=`.status.ipv6.free`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec IPPoolSpec `json:"spec"`
	// +optional
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolList is a list of IPPools.
//
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}
