package announcer

import (
	"slices"
	"testing"
	"time"
)

func TestGoneTracker(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	nodes := []string{"a", "b", "c"}
	var g goneTracker
	steps := []struct {
		at        time.Duration
		electable []string
		gone      []string
		next      time.Duration
	}{
		{0, []string{"a", "b", "c"}, nil, 0},
		{time.Second, []string{"a", "c"}, nil, goneAfter},                // b flaps out
		{1500 * time.Millisecond, []string{"a", "b", "c"}, nil, 0},       // and back: forgotten
		{2 * time.Second, []string{"a"}, nil, goneAfter},                 // b and c out
		{5 * time.Second, []string{"a"}, nil, goneAfter - 3*time.Second}, // still waiting
		{12 * time.Second, []string{"a"}, []string{"b", "c"}, 0},         // gone
		{13 * time.Second, []string{"a", "c"}, []string{"b"}, 0},         // c back
	}
	for i, s := range steps {
		gone, next := g.update(t0.Add(s.at), nodes, s.electable)
		if !slices.Equal(gone, s.gone) || next != s.next {
			t.Errorf("step %d (%s, electable %v): gone %v next %s, want %v %s", i, s.at, s.electable, gone, next, s.gone, s.next)
		}
	}
}
