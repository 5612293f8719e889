// Package promreg registers Prometheus collectors so that building a
// component twice in one process (tests, a controller restarted after a lost
// leader election) reuses the metrics already registered instead of panicking.
package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// Register registers c with reg and returns it, or returns the collector of
// the same description that reg already holds. A conflicting collector of
// another shape is a programming error; it is logged and c stays unexported
// rather than crashing the process.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	klog.ErrorS(err, "Prometheus collector not registered; its metrics are not exported")
	return c
}
