package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterReusesAndNeverPanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "pvelb_test_total", Help: "h"}
	first := Register(reg, prometheus.NewCounter(opts))
	second := Register(reg, prometheus.NewCounter(opts))
	if first != second {
		t.Fatal("a second registration must return the collector already registered")
	}
	first.Inc()
	if n, _ := reg.Gather(); len(n) != 1 || n[0].GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Fatalf("gathered %v, want one counter at 1", n)
	}
	// Same name, other shape: logged, not a panic, and the first one stays.
	other := Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pvelb_test_total", Help: "h"}, []string{"x"}))
	if other == nil {
		t.Fatal("nil collector returned")
	}
	if n, _ := reg.Gather(); len(n) != 1 {
		t.Fatalf("gathered %d families, want 1", len(n))
	}
}
