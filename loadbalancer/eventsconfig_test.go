package loadbalancer

import (
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// TestEventsHaveTheirOwnRateLimit: a burst of Events spends the Event
// client's budget, not the one of the client whose reads and writes decide
// addresses, whether the builder's config carries a limiter or only QPS.
func TestEventsHaveTheirOwnRateLimit(t *testing.T) {
	for _, c := range []struct {
		name    string
		limiter flowcontrol.RateLimiter
	}{
		{"QPS only", nil},
		{"shared limiter in the config", flowcontrol.NewTokenBucketRateLimiter(1, 1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := &rest.Config{Host: "https://192.0.2.1:6443", QPS: 1, Burst: 1, RateLimiter: c.limiter}
			writes, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			events, err := kubernetes.NewForConfig(eventsConfig(cfg))
			if err != nil {
				t.Fatal(err)
			}
			if got := eventsConfig(cfg); got.QPS != cfg.QPS || got.Burst != cfg.Burst {
				t.Errorf("events config QPS/Burst = %v/%d, want the builder's %v/%d", got.QPS, got.Burst, cfg.QPS, cfg.Burst)
			}
			el := events.CoreV1().RESTClient().GetRateLimiter()
			wl := writes.CoreV1().RESTClient().GetRateLimiter()
			if !el.TryAccept() {
				t.Fatal("the events client has no budget at all")
			}
			// The events' burst of 1 is spent; the writes' must not be.
			if !wl.TryAccept() {
				t.Error("an Event spent the budget of the client that writes addresses")
			}
		})
	}
}
