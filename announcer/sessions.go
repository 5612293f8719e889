package announcer

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/announcer/bgp/speakerproc"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
)

// sessionPoll is how often the announcer reads its speaker's session states
// (a local call); the apiserver is written only when one changed.
const sessionPoll = 2 * time.Second

// sessionStates maps each BGPPeer's name to this node's session state.
func sessionStates(st speakerproc.States) map[string]v1alpha1.BGPSession {
	out := make(map[string]v1alpha1.BGPSession, len(st.Peers))
	for _, p := range st.Peers {
		s := v1alpha1.BGPSession{State: p.State}
		if !p.Since.IsZero() {
			t := metav1.NewTime(p.Since.Truncate(time.Second))
			s.Since = &t
		}
		out[p.Name] = s
	}
	return out
}

// sessionChanges lists the peers whose entry must be written: changed or
// new ones, and gone ones (written as absent), sorted.
func sessionChanges(written, now map[string]v1alpha1.BGPSession) []string {
	var out []string
	for name, s := range now {
		if w, ok := written[name]; !ok || w.State != s.State || !w.Since.Equal(s.Since) {
			out = append(out, name)
		}
	}
	for name := range written {
		if _, ok := now[name]; !ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// runSessionStatus keeps this node's entry in each BGPPeer's
// status.sessions equal to its speaker's session state, written only when
// that changes; the first electable node also removes the entries of nodes
// that are gone.
func (c *Controller) runSessionStatus(ctx context.Context) {
	manager := announcementManager + "/" + c.cfg.Node
	written := map[string]v1alpha1.BGPSession{}
	writtenAt := map[string]time.Time{}
	started := time.Now()
	var tracker goneTracker
	t := time.NewTicker(sessionPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.bgp.mu.Lock()
		sp := c.bgp.speaker
		c.bgp.mu.Unlock()
		now := map[string]v1alpha1.BGPSession{}
		if sp != nil {
			rctx, cancel := context.WithTimeout(ctx, sessionPoll)
			st, err := sp.States(rctx)
			cancel()
			if err != nil {
				continue // the speaker restarts; keep what was written
			}
			now = sessionStates(st)
		}
		// An entry of this node's that a node taking it for gone removed is
		// written again.
		for peer := range written {
			if time.Since(writtenAt[peer]) > healAfter && !c.sessionListed(peer) {
				delete(written, peer)
			}
		}
		for _, peer := range sessionChanges(written, now) {
			s, ok := now[peer]
			if err := c.applySession(ctx, peer, manager, s, ok); err != nil {
				klog.ErrorS(err, "Writing the BGP session state", "bgppeer", peer)
				continue // retried on the next poll
			}
			if ok {
				written[peer], writtenAt[peer] = s, time.Now()
			} else {
				delete(written, peer)
			}
		}
		e := c.cfg.Membership.ElectableNodes()
		nodeObjs, _ := c.nodes.List(labels.Everything())
		var nodes []string
		for _, n := range nodeObjs {
			nodes = append(nodes, n.Name)
		}
		slices.Sort(nodes)
		gone, _ := tracker.update(time.Now(), nodes, e)
		if time.Since(started) > reapGrace && len(e) > 0 && e[0] == c.cfg.Node {
			c.reapSessions(ctx, func(node string) bool { return isGone(node, gone, nodes, e) })
		}
	}
}

// sessionListed reports whether the cached BGPPeer peer lists this node's
// session; true when the peer is not in the cache (nothing to heal).
func (c *Controller) sessionListed(peer string) bool {
	objs, err := c.bgp.peers.List(labels.Everything())
	if err != nil {
		return true
	}
	for _, o := range objs {
		if p, err := names.BGPPeer(o); err == nil && p.Name == peer {
			return slices.ContainsFunc(p.Status.Sessions, func(s v1alpha1.BGPSession) bool { return s.Node == c.cfg.Node })
		}
	}
	return true
}

// applySession writes this node's entry for peer (present) or removes it,
// as this node's own field manager, so the nodes never overwrite each other.
func (c *Controller) applySession(ctx context.Context, peer, manager string, s v1alpha1.BGPSession, present bool) error {
	obj := map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "BGPPeer",
		"metadata": map[string]any{"name": peer},
	}
	if present {
		s.Node = c.cfg.Node
		entry := map[string]any{"node": s.Node, "state": s.State}
		if s.Since != nil {
			entry["since"] = s.Since.UTC().Format(time.RFC3339)
		}
		obj["status"] = map[string]any{"sessions": []any{entry}}
	}
	_, err := c.cfg.Dynamic.Resource(names.BGPPeers).ApplyStatus(ctx, peer, &unstructured.Unstructured{Object: obj},
		metav1.ApplyOptions{FieldManager: manager, Force: true})
	if apierrors.IsNotFound(err) {
		return nil // the BGPPeer is gone, and its status with it
	}
	return err
}

// reapSessions removes the session entries of nodes that are gone in this
// node's view (stopped, cut off, deleted): their announcers cannot remove
// their own.
func (c *Controller) reapSessions(ctx context.Context, gone func(string) bool) {
	objs, err := c.bgp.peers.List(labels.Everything())
	if err != nil {
		return
	}
	for _, o := range objs {
		p, err := names.BGPPeer(o)
		if err != nil {
			continue
		}
		for i, s := range p.Status.Sessions {
			if s.Node == c.cfg.Node || !gone(s.Node) {
				continue
			}
			// The test makes the removal fail, harmlessly, when the list
			// changed since the cache saw it.
			patch, _ := json.Marshal([]map[string]any{
				{"op": "test", "path": fmt.Sprintf("/status/sessions/%d/node", i), "value": s.Node},
				{"op": "remove", "path": fmt.Sprintf("/status/sessions/%d", i)},
			})
			_, err := c.cfg.Dynamic.Resource(names.BGPPeers).Patch(ctx, p.Name, types.JSONPatchType, patch, metav1.PatchOptions{}, "status")
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) && !apierrors.IsConflict(err) {
				klog.ErrorS(err, "Removing the BGP session of a gone node", "bgppeer", p.Name, "node", s.Node)
			}
			break // indexes moved; the next poll sees the new list
		}
	}
}
