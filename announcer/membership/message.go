package membership

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Wire format, version 1 (all integers big endian):
//
//	magic "PVLB" | version u8 | kind u8 | incarnation u64 | seq u64 |
//	unix nanos i64 | name length u8 | name | HMAC-SHA256 of everything before
//
// The incarnation is the sender's start time in nanoseconds, so a restarted
// announcer outranks everything its previous life sent; seq grows with every
// message of one incarnation. Receivers accept only strictly newer
// (incarnation, seq) pairs per peer and timestamps within a window of their
// own clock, so a captured message cannot be replayed to fake liveness.
const (
	magic      = "PVLB"
	version    = 1
	headerLen  = 4 + 1 + 1 + 8 + 8 + 8 + 1
	macLen     = sha256.Size
	maxNameLen = 253 // a Kubernetes node name is a DNS subdomain
)

// Kind says what a message announces.
type Kind uint8

const (
	// Heartbeat: the sender is alive and answering.
	Heartbeat Kind = 1
	// Leaving: the sender is shutting down; take over its VIPs now.
	Leaving Kind = 2
)

type message struct {
	Kind        Kind
	Incarnation uint64
	Seq         uint64
	Time        time.Time
	Node        string
}

var (
	errMalformed = errors.New("malformed message")
	errBadAuth   = errors.New("authentication failed")
)

func (m message) marshal(secret []byte) ([]byte, error) {
	if len(m.Node) == 0 || len(m.Node) > maxNameLen {
		return nil, fmt.Errorf("node name length %d out of 1..%d", len(m.Node), maxNameLen)
	}
	b := make([]byte, 0, headerLen+len(m.Node)+macLen)
	b = append(b, magic...)
	b = append(b, version, byte(m.Kind))
	b = binary.BigEndian.AppendUint64(b, m.Incarnation)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time.UnixNano()))
	b = append(b, byte(len(m.Node)))
	b = append(b, m.Node...)
	mac := hmac.New(sha256.New, secret)
	mac.Write(b)
	return mac.Sum(b), nil
}

// unmarshal checks the MAC before looking at any field, so an unauthenticated
// sender learns nothing from how its packet is treated.
func unmarshal(b, secret []byte) (message, error) {
	if len(b) < headerLen+1+macLen || string(b[:4]) != magic {
		return message{}, errMalformed
	}
	body, sum := b[:len(b)-macLen], b[len(b)-macLen:]
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), sum) {
		return message{}, errBadAuth
	}
	if body[4] != version {
		return message{}, fmt.Errorf("%w: version %d", errMalformed, body[4])
	}
	kind := Kind(body[5])
	if kind != Heartbeat && kind != Leaving {
		return message{}, fmt.Errorf("%w: kind %d", errMalformed, kind)
	}
	n := int(body[headerLen-1])
	if n == 0 || len(body) != headerLen+n {
		return message{}, fmt.Errorf("%w: name length", errMalformed)
	}
	return message{
		Kind:        kind,
		Incarnation: binary.BigEndian.Uint64(body[6:14]),
		Seq:         binary.BigEndian.Uint64(body[14:22]),
		Time:        time.Unix(0, int64(binary.BigEndian.Uint64(body[22:30]))),
		Node:        string(body[headerLen:]),
	}, nil
}
