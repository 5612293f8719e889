package loadbalancer

import "slices"

// reportOnce remembers the message last reported per key (a Service), so
// that a state is reported when it appears or changes, not on every pass.
type reportOnce map[string]string

// update makes now the reported state and returns the keys whose message
// is new or changed, and those no longer in now, both sorted.
func (r reportOnce) update(now map[string]string) (changed, cleared []string) {
	for k, msg := range now {
		if last, ok := r[k]; !ok || last != msg {
			changed = append(changed, k)
		}
	}
	for k := range r {
		if _, still := now[k]; !still {
			cleared = append(cleared, k)
			delete(r, k)
		}
	}
	for _, k := range changed {
		r[k] = now[k]
	}
	slices.Sort(changed)
	slices.Sort(cleared)
	return changed, cleared
}
