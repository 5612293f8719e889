package loadbalancer

import (
	"context"
	"encoding/json"
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// conditionalPatch is the strategic merge patch from svc to updated (status
// and finalizers, as the service controller writes them), made conditional
// on svc's resourceVersion: the apiserver refuses it with a Conflict once
// the Service changed since it was read. Without the condition a replica
// that was paused while another took over (or a worker holding an old copy)
// could put back a status or a finalizer decided from an older state.
func conditionalPatch(svc, updated *v1.Service) ([]byte, error) {
	oldJSON, err := json.Marshal(svc)
	if err != nil {
		return nil, err
	}
	newJSON, err := json.Marshal(updated)
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, v1.Service{})
	if err != nil {
		return nil, fmt.Errorf("building the patch of Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	var m map[string]any
	if err := json.Unmarshal(patch, &m); err != nil {
		return nil, err
	}
	meta, _ := m["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["resourceVersion"] = svc.ResourceVersion
	m["metadata"] = meta
	return json.Marshal(m)
}

// patchService writes the difference between svc and updated through the
// status subresource (which also takes finalizer changes), conditional on
// svc's resourceVersion and on this replica still leading (see leaseFence),
// and returns the Service as written.
func (c *Controller) patchService(ctx context.Context, svc, updated *v1.Service) (*v1.Service, error) {
	if err := c.fence.check(); err != nil {
		return nil, err
	}
	patch, err := conditionalPatch(svc, updated)
	if err != nil {
		return nil, err
	}
	return c.kube.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.StrategicMergePatchType, patch, metav1PatchOptions, "status")
}
