package loadbalancer

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the LoadBalancer's Prometheus metrics (the firewall reconciler
// and the Proxmox client have their own).
type metrics struct {
	allocations       *prometheus.CounterVec
	failures          *prometheus.CounterVec
	services          prometheus.Gauge
	firewallFailing   prometheus.Gauge
	noEligibleNode    prometheus.Gauge
	outsidePool       prometheus.Gauge
	firewallDesiredAt prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pvelb", Subsystem: "loadbalancer", Name: "allocations_total",
			Help: "Services whose addresses were assigned or changed, by controller (service-controller or class).",
		}, []string{"controller"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pvelb", Subsystem: "loadbalancer", Name: "allocation_failures_total",
			Help: "Failed address allocations, by reason (PoolExhausted, AddressInUse, AddressOutsidePools, SharingRefused, ...).",
		}, []string{"reason"}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pvelb", Subsystem: "loadbalancer", Name: "services",
			Help: "Services holding at least one address.",
		}),
		firewallFailing: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pvelb", Subsystem: "loadbalancer", Name: "firewall_failing_services",
			Help: "Services whose VIPs the last firewall pass could not admit somewhere in Proxmox.",
		}),
		noEligibleNode: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pvelb", Subsystem: "loadbalancer", Name: "no_eligible_node_services",
			Help: "Services with an address no node may announce (all excluded or not selected).",
		}),
		outsidePool: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pvelb", Subsystem: "loadbalancer", Name: "addresses_outside_pools",
			Help: "Addresses kept by Services although no IPPool contains them any more.",
		}),
		firewallDesiredAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pvelb", Subsystem: "loadbalancer", Name: "firewall_desired_state_timestamp_seconds",
			Help: "Unix time the firewall desired state was last handed to the reconciler.",
		}),
	}
	if reg != nil {
		m.allocations = register(reg, m.allocations)
		m.failures = register(reg, m.failures)
		m.services = register(reg, m.services)
		m.firewallFailing = register(reg, m.firewallFailing)
		m.noEligibleNode = register(reg, m.noEligibleNode)
		m.outsidePool = register(reg, m.outsidePool)
		m.firewallDesiredAt = register(reg, m.firewallDesiredAt)
	}
	return m
}

// register reuses an already registered collector, so a restarted controller
// in one process (tests, leader re-election) does not panic.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
