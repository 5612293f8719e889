package loadbalancer

import (
	"slices"
	"testing"
)

func TestReportOnce(t *testing.T) {
	r := reportOnce{}
	steps := []struct {
		now              map[string]string
		changed, cleared []string
	}{
		{now: map[string]string{"a/x": "no node", "a/y": "no node"}, changed: []string{"a/x", "a/y"}},
		{now: map[string]string{"a/x": "no node", "a/y": "no node"}},                               // same state: nothing
		{now: map[string]string{"a/x": "other cause", "a/y": "no node"}, changed: []string{"a/x"}}, // changed message
		{now: map[string]string{"a/y": "no node"}, cleared: []string{"a/x"}},
		{now: map[string]string{"a/x": "other cause"}, changed: []string{"a/x"}, cleared: []string{"a/y"}}, // back: reported again
	}
	for i, s := range steps {
		changed, cleared := r.update(s.now)
		if !slices.Equal(changed, s.changed) || !slices.Equal(cleared, s.cleared) {
			t.Errorf("step %d: changed %v cleared %v, want %v and %v", i, changed, cleared, s.changed, s.cleared)
		}
	}
}
