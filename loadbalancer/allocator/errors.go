package allocator

import (
	"errors"
	"net/netip"
)

// Reason classifies an allocation failure, for Events and metrics.
type Reason string

const (
	ReasonPoolExhausted     Reason = "PoolExhausted"
	ReasonNotInAnyPool      Reason = "NotInAnyPool"
	ReasonHeldBy            Reason = "HeldBy"
	ReasonSharingRefused    Reason = "SharingRefused"
	ReasonRequestConflict   Reason = "RequestConflict"
	ReasonNoMatchingPool    Reason = "NoMatchingPool"
	ReasonFamilyUnavailable Reason = "FamilyUnavailable"
	ReasonInvalidRequest    Reason = "InvalidRequest"
)

// Error is an allocation failure with a message a user can act on.
type Error struct {
	Reason  Reason
	Address netip.Addr // the address concerned, if any
	Holder  ServiceKey // for HeldBy and SharingRefused
	Pool    string     // the pool concerned, if any
	Msg     string
}

func (e *Error) Error() string { return e.Msg }

// ReasonOf returns the Reason of an allocator error, or "" for other errors.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// Warning reports a Service whose address lies outside every pool (after a
// pool shrank or was removed). The address is kept, not moved.
type Warning struct {
	Service ServiceKey
	Address netip.Addr
	Msg     string
}

// Conflict reports an address that two Services claimed during Restore and
// that they may not share: Winner (the older) keeps it, Loser must be
// re-assigned.
type Conflict struct {
	Loser   ServiceKey
	Winner  ServiceKey
	Address netip.Addr
	Err     *Error
}
