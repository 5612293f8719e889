package pvesim

import (
	"net/http"
	"strings"
)

// SetOutage makes every request fail with 503 while on.
func (s *Server) SetOutage(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = on
}

// InjectFault adds a fault; faults are tried in the order added.
func (s *Server) InjectFault(f Fault) {
	if f.Status == 0 {
		f.Status = http.StatusInternalServerError
	}
	if f.Reason == "" {
		f.Reason = http.StatusText(f.Status)
		if f.Reason == "" {
			f.Reason = "injected fault"
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes all injected faults.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// takeFault returns the error of the first fault matching the request and
// uses up one of its counts.
func (s *Server) takeFault(method, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if (f.Method != "" && !strings.EqualFold(f.Method, method)) || !strings.HasPrefix(path, f.PathPrefix) {
			continue
		}
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return &apiError{Status: f.Status, Message: f.Reason}
	}
	return nil
}

// Stats returns a copy of the request counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Stats{Requests: s.stats.Requests, Writes: s.stats.Writes, ByPath: make(map[string]int, len(s.stats.ByPath))}
	for k, v := range s.stats.ByPath {
		out.ByPath[k] = v
	}
	return out
}

// ResetStats zeroes the request counters.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{ByPath: map[string]int{}}
}
