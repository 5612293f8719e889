// Package docs holds pvelb's user documentation (Markdown) and the test that
// keeps docs/reference.md and docs/metrics.md in step with the code: every
// flag, cloud-config key, CRD field, pvelb.io/ annotation or label, Event
// reason and Prometheus metric the code defines must be documented, and
// nothing documented may be gone from the code.
package docs
