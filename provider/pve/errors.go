package pve

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Error is a failed Proxmox API call. StatusCode and Reason are what the server
// (or its proxy) answered; Errors holds per-parameter messages of a 400.
type Error struct {
	Method     string
	Path       string
	StatusCode int
	Reason     string
	Errors     map[string]string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("proxmox %s %s: %d %s", e.Method, e.Path, e.StatusCode, e.Reason)
	if len(e.Errors) > 0 {
		msg += fmt.Sprintf(" %v", e.Errors)
	}
	return msg
}

func asError(err error) (*Error, bool) {
	var pe *Error
	ok := errors.As(err, &pe)
	return pe, ok
}

// IsNotFound reports whether Proxmox said the object does not exist: a VM whose
// config file is missing, or an IPSet that does not exist.
func IsNotFound(err error) bool {
	pe, ok := asError(err)
	if !ok || pe.StatusCode != http.StatusInternalServerError {
		return false
	}
	r := strings.ToLower(pe.Reason)
	return strings.Contains(r, "does not exist") || strings.Contains(r, "no such")
}

// IsAuth reports an authentication or permission failure (401 or 403).
func IsAuth(err error) bool {
	pe, ok := asError(err)
	return ok && (pe.StatusCode == http.StatusUnauthorized || pe.StatusCode == http.StatusForbidden)
}

// IsConflict reports a digest mismatch: the object changed since it was read.
func IsConflict(err error) bool {
	pe, ok := asError(err)
	return ok && pe.StatusCode == http.StatusInternalServerError &&
		strings.Contains(pe.Reason, "detected modified configuration")
}

// IsAlreadyExists reports a 400 for an IPSet entry or set that exists already.
func IsAlreadyExists(err error) bool {
	pe, ok := asError(err)
	if !ok || pe.StatusCode != http.StatusBadRequest {
		return false
	}
	for _, m := range pe.Errors {
		if strings.Contains(m, "already exists") {
			return true
		}
	}
	return strings.Contains(pe.Reason, "already exists")
}

// IsTransient reports failures worth retrying: lock timeouts, lost quorum,
// proxy errors (502-504, 595-599), requests that got no answer (see
// NetworkError) and the like.
func IsTransient(err error) bool {
	var ne *NetworkError
	if errors.As(err, &ne) {
		return ne.Transient()
	}
	pe, ok := asError(err)
	if !ok {
		return false
	}
	switch {
	case pe.StatusCode == http.StatusBadGateway, pe.StatusCode == http.StatusServiceUnavailable,
		pe.StatusCode == http.StatusGatewayTimeout, pe.StatusCode == http.StatusTooManyRequests,
		pe.StatusCode >= 595 && pe.StatusCode <= 599:
		return true
	case pe.StatusCode == http.StatusInternalServerError:
		r := strings.ToLower(pe.Reason)
		return strings.Contains(r, "got lock request timeout") || strings.Contains(r, "no quorum") ||
			strings.Contains(r, "can't lock file") || strings.Contains(r, "got timeout")
	}
	return false
}
