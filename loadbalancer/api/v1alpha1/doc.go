// Package v1alpha1 holds the pvelb.io/v1alpha1 API: IPPool (address pools for
// LoadBalancer Services and how their addresses are announced) and BGPPeer
// (BGP sessions of the announcer).
//
// The CRD manifests in manifests/crds are generated from these types by
// hack/generate.sh; the kubebuilder markers carry the admission checks (schema
// and CEL), so bad objects are refused by the apiserver instead of surfacing
// later as controller errors.
//
// +kubebuilder:object:generate=true
// +groupName=pvelb.io
package v1alpha1
