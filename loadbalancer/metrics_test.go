package loadbalancer

import (
	"math/big"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
)

// TestPoolUsageMetrics: every family of every pool gets its size and use,
// and a pool that is gone loses its series (no stale alert on it).
func TestPoolUsageMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	fu := func(total, used int64) *allocator.FamilyUsage {
		return &allocator.FamilyUsage{Total: big.NewInt(total), Used: used, Free: big.NewInt(total - used)}
	}
	m.setPoolUsage([]allocator.PoolUsage{
		{Name: "dual", IPv4: fu(11, 10), IPv6: fu(16, 1)},
		{Name: "gone", IPv4: fu(4, 0)},
	})
	m.setPoolUsage([]allocator.PoolUsage{{Name: "dual", IPv4: fu(11, 10), IPv6: fu(16, 1)}})
	want := `
# HELP pvelb_loadbalancer_pool_addresses Addresses an IPPool can hand out, by pool and family (ipv4, ipv6).
# TYPE pvelb_loadbalancer_pool_addresses gauge
pvelb_loadbalancer_pool_addresses{family="ipv4",pool="dual"} 11
pvelb_loadbalancer_pool_addresses{family="ipv6",pool="dual"} 16
# HELP pvelb_loadbalancer_pool_addresses_used Addresses of an IPPool held by Services, by pool and family (ipv4, ipv6).
# TYPE pvelb_loadbalancer_pool_addresses_used gauge
pvelb_loadbalancer_pool_addresses_used{family="ipv4",pool="dual"} 10
pvelb_loadbalancer_pool_addresses_used{family="ipv6",pool="dual"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pvelb_loadbalancer_pool_addresses", "pvelb_loadbalancer_pool_addresses_used"); err != nil {
		t.Error(err)
	}
}
