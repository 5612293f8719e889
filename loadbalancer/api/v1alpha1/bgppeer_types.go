package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SecretKeyRef points at one key of a Secret. BGPPeer is cluster-scoped, so
// the namespace must be given.
type SecretKeyRef struct {
	// Namespace of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// Key in the Secret's data.
	// +optional
	// +kubebuilder:default=password
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// GracefulRestart asks the peer to keep our routes while our speaker restarts
// (RFC 4724), so an announcer upgrade does not drop traffic.
type GracefulRestart struct {
	// Enabled turns on the graceful-restart capability.
	Enabled bool `json:"enabled"`
	// RestartTime the peer keeps our routes for. At most 4095s (12-bit field).
	// +optional
	// +kubebuilder:default="120s"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",message="must be a duration such as 90s or 1m30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('4095s')",message="restartTime must be between 1s and 4095s"
	RestartTime *metav1.Duration `json:"restartTime,omitempty"`
}

// BGPPeerSpec describes one BGP session that announcers open.
//
// +kubebuilder:validation:XValidation:rule="!has(self.sourceAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()",message="sourceAddress must be of the same IP family as peerAddress"
// +kubebuilder:validation:XValidation:rule="!has(self.ebgpMultiHop) || self.peerASN != self.myASN",message="ebgpMultiHop applies only to eBGP sessions (peerASN != myASN)"
// +kubebuilder:validation:XValidation:rule="duration(self.holdTime) == duration('0s') || duration(self.holdTime) >= duration('3s')",message="holdTime must be 0s (no keepalives) or at least 3s (RFC 4271)"
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTime) || (duration(self.holdTime) == duration('0s') ? duration(self.keepaliveTime) == duration('0s') : duration(self.keepaliveTime) < duration(self.holdTime))",message="keepaliveTime must be shorter than holdTime (and 0s when holdTime is 0s)"
type BGPPeerSpec struct {
	// PeerAddress is the IPv4 or IPv6 address of the router.
	// +required
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="peerAddress must be an IP address"
	PeerAddress string `json:"peerAddress"`

	// PeerASN is the router's autonomous system number.
	// +required
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	PeerASN uint32 `json:"peerASN"`

	// MyASN is the announcers' autonomous system number.
	// +required
	// +kubebuilder:validation:Format=int64
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	MyASN uint32 `json:"myASN"`

	// PeerPort is the router's BGP port.
	// +optional
	// +kubebuilder:default=179
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	PeerPort int32 `json:"peerPort,omitempty"`

	// HoldTime proposed to the peer; 0s disables keepalives.
	// +optional
	// +kubebuilder:default="90s"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",message="must be a duration such as 90s or 1m30s"
	HoldTime metav1.Duration `json:"holdTime,omitempty"`

	// KeepaliveTime between keepalive messages; default a third of holdTime.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",message="must be a duration such as 90s or 1m30s"
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// PasswordSecretRef names the Secret key holding the TCP MD5 password.
	// +optional
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`

	// NodeSelector picks the nodes that open this session. Empty means all.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// EBGPMultiHop is the TTL of packets to an eBGP peer that is not directly
	// connected. Unset means directly connected (TTL 1).
	// +optional
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	EBGPMultiHop *int32 `json:"ebgpMultiHop,omitempty"`

	// SourceAddress the session is opened from. Empty lets the kernel choose.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="sourceAddress must be an IP address"
	SourceAddress string `json:"sourceAddress,omitempty"`

	// GracefulRestart settings.
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`
}

// BGPSession is one node's session to a BGPPeer.
type BGPSession struct {
	// Node whose announcer holds the session.
	Node string `json:"node"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm, established or unknown.
	State string `json:"state"`
	// Since is when the session entered that state, when known.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// BGPPeerStatus is what the announcers report about the peer.
type BGPPeerStatus struct {
	// Sessions holds one entry per node the BGPPeer selects, written by
	// that node's announcer when its session changes state (never on a
	// timer).
	// +optional
	// +listType=map
	// +listMapKey=node
	Sessions []BGPSession `json:"sessions,omitempty"`
}

// BGPPeer is a BGP router the announcers peer with.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=pvelb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Peer",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="Peer ASN",type=integer,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="My ASN",type=integer,JSONPath=`.spec.myASN`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec BGPPeerSpec `json:"spec"`
	// +optional
	Status BGPPeerStatus `json:"status,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}
