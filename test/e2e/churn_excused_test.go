package e2e

import (
	"testing"
	"time"
)

// TestChurnExcused: the churn suite's rule for which sharing windows are an
// edit's own (see churnLog.excused), on hand-made timelines.
func TestChurnExcused(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	edit := churnEvent{At: at(0), N: 1, Op: "edit", Svc: "default/a", MayMove: true}
	restart := churnEvent{At: at(-15000), N: 2, Op: "restart-apiserver"}
	kill := churnEvent{At: at(-500), N: 3, Op: "kill-leader"}
	win := func(first, last int) Violation {
		return Violation{Services: []string{"default/a", "default/b"}, First: at(first), Last: at(last), Ended: true}
	}
	tests := []struct {
		name     string
		events   []churnEvent
		v        Violation
		acquired []time.Time
		want     bool
	}{
		{"short window after an edit", []churnEvent{edit}, win(100, 1900), nil, true},
		{"no edit before it", nil, win(100, 1900), nil, false},
		{"long window, no leader change", []churnEvent{edit}, win(100, 2500), nil, false},
		{"long window ending within 4 s of a new leader, its cause long before", []churnEvent{restart, edit}, win(100, 2500), []time.Time{at(-1000)}, true},
		{"long window ending 4 s after the new leader", []churnEvent{restart, edit}, win(100, 5500), []time.Time{at(1000)}, false},
		{"long window after a kill, no leader yet", []churnEvent{kill, edit}, win(100, 4500), nil, true},
		{"long window after a kill, closed late by the next leader", []churnEvent{kill, edit}, win(100, 9000), []time.Time{at(2000)}, false},
		{"seen only once the apiserver was back: its edit came before the restart", []churnEvent{{At: at(-11000), N: 4, Op: "edit", Svc: "default/a", MayMove: true}, {At: at(-10990), N: 5, Op: "restart-apiserver"}, {At: at(2000), N: 6, Op: "stop-leader"}},
			Violation{Services: []string{"default/a", "default/b"}, Unseen: at(-11100), First: at(100), Last: at(5000), Ended: true}, []time.Time{at(5100)}, true},
		{"same, had the window been seen from its start", []churnEvent{{At: at(-11000), N: 4, Op: "edit", Svc: "default/a", MayMove: true}, {At: at(-10990), N: 5, Op: "restart-apiserver"}, {At: at(2000), N: 6, Op: "stop-leader"}},
			Violation{Services: []string{"default/a", "default/b"}, Unseen: at(0), First: at(100), Last: at(5000), Ended: true}, []time.Time{at(5100)}, false},
		{"an edit made before a leader change, the window opened by the new leader's first sync", []churnEvent{{At: at(-4200), N: 4, Op: "edit", Svc: "default/a", MayMove: true}, {At: at(-4800), N: 5, Op: "kill-leader"}, {At: at(400), N: 6, Op: "stop-leader"}},
			win(0, 4900), []time.Time{at(-200), at(5000)}, true},
		{"same edit, but the window opened long after the new leader began", []churnEvent{{At: at(-9200), N: 4, Op: "edit", Svc: "default/a", MayMove: true}},
			win(0, 1000), []time.Time{at(-9000)}, false},
		{"window still open", []churnEvent{edit}, Violation{Services: []string{"default/a"}, First: at(100), Last: at(300)}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c churnLog
			for _, e := range tt.events {
				c.add(e)
			}
			if got := c.excused(tt.v, tt.acquired); got != tt.want {
				t.Fatalf("excused = %v, want %v", got, tt.want)
			}
		})
	}
}
