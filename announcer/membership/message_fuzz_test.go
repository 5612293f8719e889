package membership

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
	"time"
)

// FuzzUnmarshal feeds hostile datagrams to the decoder: it must never
// panic, and whatever it accepts must re-encode to the same bytes (so only
// a correctly MACed message gets through).
func FuzzUnmarshal(f *testing.F) {
	secret := []byte("0123456789abcdef")
	good, _ := message{Kind: Heartbeat, Incarnation: 1, Seq: 2, Time: time.Unix(0, 3), Electable: true, Node: "node-1",
		Entries: []entry{{Hash: 7, Flags: entryHeard}, {Hash: 9, Flags: entryHeard | entryVouch}}}.marshal(secret)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte("PVLB"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := unmarshal(b, secret)
		if err != nil {
			return
		}
		again, err := m.marshal(secret)
		if err != nil {
			t.Fatalf("accepted %x but cannot re-encode: %v", b, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted %x, re-encodes to %x", b, again)
		}
	})
}

// FuzzUnmarshalAuthenticated MACs the fuzzed body correctly, so the parser
// behind the MAC check (a peer holding the secret, or a bug in one) is
// exercised too.
func FuzzUnmarshalAuthenticated(f *testing.F) {
	secret := []byte("0123456789abcdef")
	good, _ := message{Kind: Leaving, Incarnation: 1, Seq: 2, Time: time.Unix(0, 3), Node: "n"}.marshal(secret)
	f.Add(good[:len(good)-macLen])
	f.Add([]byte("PVLB\x01\x01"))
	f.Fuzz(func(t *testing.T, body []byte) {
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		b := mac.Sum(bytes.Clone(body))
		m, err := unmarshal(b, secret)
		if err != nil {
			return
		}
		if again, err := m.marshal(secret); err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted %x, re-encodes to %x (%v)", b, again, err)
		}
	})
}
