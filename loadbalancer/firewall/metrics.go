package firewall

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pvelb/pvelb/provider/promreg"
)

// Metrics are the reconciler's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	writes       *prometheus.CounterVec
	errors       *prometheus.CounterVec
	driftRepairs prometheus.Counter
	lastSuccess  prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered). Registering twice with one registry reuses the first set, so
// tests and restarts of a controller in one process do not panic.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pvelb", Subsystem: "firewall", Name: "writes_total",
			Help: "Proxmox IPSet writes made by the firewall reconciler, by kind (add, delete, update, create-set).",
		}, []string{"kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pvelb", Subsystem: "firewall", Name: "reconcile_errors_total",
			Help: "Failed IPSet reconciliations of one set, by reason (auth, conflict, not_found, transient, unsafe, other).",
		}, []string{"reason"}),
		driftRepairs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pvelb", Subsystem: "firewall", Name: "drift_repairs_total",
			Help: "IPSets that needed writes although the desired state had not changed since they were last in sync (changed outside pvelb).",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pvelb", Subsystem: "firewall", Name: "last_successful_reconcile_timestamp_seconds",
			Help: "Unix time of the end of the last reconcile pass in which every IPSet was reconciled without error.",
		}),
	}
	if reg != nil {
		m.writes = promreg.Register(reg, m.writes)
		m.errors = promreg.Register(reg, m.errors)
		m.driftRepairs = promreg.Register(reg, m.driftRepairs)
		m.lastSuccess = promreg.Register(reg, m.lastSuccess)
	}
	return m
}

func (m *Metrics) write(kind ActionKind) {
	if m != nil {
		m.writes.WithLabelValues(string(kind)).Inc()
	}
}

func (m *Metrics) failed(reason string) {
	if m != nil {
		m.errors.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) drift() {
	if m != nil {
		m.driftRepairs.Inc()
	}
}

func (m *Metrics) succeeded(unixSeconds float64) {
	if m != nil {
		m.lastSuccess.Set(unixSeconds)
	}
}
