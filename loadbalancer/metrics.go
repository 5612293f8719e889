package loadbalancer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pvelb/pvelb/provider/promreg"
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
		m.allocations = promreg.Register(reg, m.allocations)
		m.failures = promreg.Register(reg, m.failures)
		m.services = promreg.Register(reg, m.services)
		m.firewallFailing = promreg.Register(reg, m.firewallFailing)
		m.noEligibleNode = promreg.Register(reg, m.noEligibleNode)
		m.outsidePool = promreg.Register(reg, m.outsidePool)
		m.firewallDesiredAt = promreg.Register(reg, m.firewallDesiredAt)
	}
	return m
}
