package config

import (
	"fmt"
	"io"
)

// redacted is what every printing path shows instead of a secret.
const redacted = "[redacted]"

// Secret holds a credential (a Proxmox API token secret). Every way Go or klog
// prints or encodes a value (fmt verbs, %#v, JSON, text, logr) shows
// "[redacted]" instead, so a config struct can be logged or wrapped into an
// error without leaking it. Use Reveal where the real value is needed.
type Secret string

// Reveal returns the secret itself. Call it only where the value is sent to
// Proxmox, never to build a message.
func (s Secret) Reveal() string { return string(s) }

// String redacts the secret; an empty secret prints as "" so a missing one
// is still visible when debugging.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts %#v.
func (s Secret) GoString() string { return fmt.Sprintf("config.Secret(%q)", s.String()) }

// Format redacts every fmt verb, including %v, %s, %q, %x and %d, which
// would otherwise bypass String for a string kind.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, s.GoString())
	case verb == 'q':
		_, _ = fmt.Fprintf(f, "%q", s.String())
	default:
		_, _ = io.WriteString(f, s.String())
	}
}

// MarshalJSON redacts JSON encodings.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(fmt.Sprintf("%q", s.String())), nil }

// MarshalText redacts text encodings (YAML, map keys, flag printing).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalLog redacts logr/klog structured values.
func (s Secret) MarshalLog() any { return s.String() }
