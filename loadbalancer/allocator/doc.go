// Package allocator hands out LoadBalancer addresses from IP pools.
//
// It is pure bookkeeping: no Kubernetes client, no clock, no I/O. The caller
// (the LoadBalancer implementation) converts Services and IPPools into the
// types here, replays the addresses already in Services' status with Restore
// on start, then calls Assign for each Service it reconciles, Withdraw when a
// Service stops being a LoadBalancer or is deleted, Shown whenever it sees
// what a Service's status shows, and Release once a Service is gone.
//
// Guarantees:
//   - an address is never held by two Services that may not share it, across
//     all namespaces and pools (ownership is tracked per address, globally);
//     sharing keys are per namespace;
//   - an address a Service gives up (it moved, was withdrawn, or may no
//     longer share it) stays reserved for it until Shown reports its status
//     no longer shows it, so no other Service can show it meanwhile;
//   - an address a Service already has is kept while it still fits the
//     Service's request, so restarts and pool edits never move addresses;
//     the allocator's own record wins over a status that may be stale;
//   - choices are deterministic: pools by priority (MetalLB's order: lower
//     first, none last) then name,
//     addresses lowest first;
//   - a failed Assign keeps what the Service may still hold as it is now,
//     and takes nothing new.
//
// An Allocator is not safe for concurrent use; callers serialise access.
package allocator
