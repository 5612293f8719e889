package loadbalancer

import (
	"math/big"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
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
	poolAddresses     *prometheus.GaugeVec
	poolUsed          *prometheus.GaugeVec
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
		poolAddresses: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "pvelb", Subsystem: "loadbalancer", Name: "pool_addresses",
			Help: "Addresses an IPPool can hand out, by pool and family (ipv4, ipv6).",
		}, []string{"pool", "family"}),
		poolUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "pvelb", Subsystem: "loadbalancer", Name: "pool_addresses_used",
			Help: "Addresses of an IPPool held by Services, by pool and family (ipv4, ipv6).",
		}, []string{"pool", "family"}),
	}
	if reg != nil {
		m.allocations = promreg.Register(reg, m.allocations)
		m.failures = promreg.Register(reg, m.failures)
		m.services = promreg.Register(reg, m.services)
		m.firewallFailing = promreg.Register(reg, m.firewallFailing)
		m.noEligibleNode = promreg.Register(reg, m.noEligibleNode)
		m.outsidePool = promreg.Register(reg, m.outsidePool)
		m.firewallDesiredAt = promreg.Register(reg, m.firewallDesiredAt)
		m.poolAddresses = promreg.Register(reg, m.poolAddresses)
		m.poolUsed = promreg.Register(reg, m.poolUsed)
	}
	return m
}

// RegisterMetrics registers the LoadBalancer's metrics with reg without
// building a controller, so tests can list what pvelb-ccm exports.
func RegisterMetrics(reg prometheus.Registerer) { newMetrics(reg) }

// setPoolUsage replaces the pool gauges with usage: pools that are gone lose
// their series. The sizes of large IPv6 pools are approximate as floats,
// which a ratio does not mind.
func (m *metrics) setPoolUsage(usage []allocator.PoolUsage) {
	m.poolAddresses.Reset()
	m.poolUsed.Reset()
	for _, u := range usage {
		for family, fu := range map[string]*allocator.FamilyUsage{"ipv4": u.IPv4, "ipv6": u.IPv6} {
			if fu == nil {
				continue
			}
			total, _ := new(big.Float).SetInt(fu.Total).Float64()
			m.poolAddresses.WithLabelValues(u.Name, family).Set(total)
			m.poolUsed.WithLabelValues(u.Name, family).Set(float64(fu.Used))
		}
	}
}
