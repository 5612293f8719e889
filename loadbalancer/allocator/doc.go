// Package allocator hands out LoadBalancer addresses from IP pools.
//
// It is pure bookkeeping: no Kubernetes client, no clock, no I/O. The caller
// (the LoadBalancer implementation) converts Services and IPPools into the
// types here, replays the addresses already in Services' status with Restore
// on start, then calls Assign for each Service it reconciles and Release when
// a Service stops being a LoadBalancer or is deleted.
//
// Guarantees:
//   - an address is never held by two Services that may not share it, across
//     all namespaces and pools (ownership is tracked per address, globally);
//   - an address a Service already has is kept while it still fits the
//     Service's request, so restarts and pool edits never move addresses;
//   - choices are deterministic: pools by priority (higher first) then name,
//     addresses lowest first;
//   - a failed Assign changes nothing.
//
// An Allocator is not safe for concurrent use; callers serialise access.
package allocator
