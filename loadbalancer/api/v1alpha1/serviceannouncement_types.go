package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnouncementMode is how a node makes a Service's addresses reachable.
// +kubebuilder:validation:Enum=L2;BGP;L2+BGP
type AnnouncementMode string

const (
	// AnnouncementL2 is ARP (IPv4) and NDP (IPv6) from the one elected node.
	AnnouncementL2 AnnouncementMode = "L2"
	// AnnouncementBGP is a route advertised by every eligible node.
	AnnouncementBGP AnnouncementMode = "BGP"
	// AnnouncementL2BGP is a Service with addresses of both kinds (a
	// dual-stack Service whose families' pools announce differently).
	AnnouncementL2BGP AnnouncementMode = "L2+BGP"
)

// ServiceAnnouncementStatus is what one node announces for one Service.
type ServiceAnnouncementStatus struct {
	// Service is the name of the Service (in the object's namespace).
	Service string `json:"service"`
	// Node announces the addresses.
	Node string `json:"node"`
	// Mode is L2 (this node answers ARP/NDP), BGP (this node advertises the
	// routes) or L2+BGP (some of each).
	Mode AnnouncementMode `json:"mode"`
	// IPs this node announces for the Service.
	// +listType=set
	IPs []string `json:"ips"`
	// Interfaces the node answers on (L2), comma-separated.
	// +optional
	Interfaces string `json:"interfaces,omitempty"`
	// ProxmoxHost is the Proxmox VE host running the node's VM (the Node's
	// pvelb.io/proxmox-host label).
	// +optional
	ProxmoxHost string `json:"proxmoxHost,omitempty"`
	// VMID is the node's Proxmox VM ID (the Node's pvelb.io/proxmox-vmid
	// label).
	// +optional
	VMID string `json:"vmid,omitempty"`
}

// ServiceAnnouncement says that one node announces a Service's addresses:
// created by that node's announcer when it starts announcing them, updated
// when they change and deleted when it stops (never written on a timer),
// and removed with the Service (owner reference). So `kubectl get
// serviceannouncements` shows who answers each VIP now, and since when (its
// age): one object for an L2 Service, one per advertising node for BGP.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=pvelb,shortName=svcann
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.status.service`
// +kubebuilder:printcolumn:name="IPs",type=string,JSONPath=`.status.ips`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.status.mode`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.node`
// +kubebuilder:printcolumn:name="Proxmox Host",type=string,JSONPath=`.status.proxmoxHost`
// +kubebuilder:printcolumn:name="VM",type=string,JSONPath=`.status.vmid`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ServiceAnnouncement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Status is written by the announcing node only; there is no spec.
	// +optional
	Status ServiceAnnouncementStatus `json:"status,omitempty"`
}

// ServiceAnnouncementList is a list of ServiceAnnouncements.
//
// +kubebuilder:object:root=true
type ServiceAnnouncementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ServiceAnnouncement `json:"items"`
}
