package membership

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"time"
)

// Wire format, version 2 (all integers big endian):
//
//	magic "PVLB" | version u8 | kind u8 | incarnation u64 | seq u64 |
//	unix nanos i64 | flags u8 | name length u8 | name |
//	entry count u16 | entries: (name hash u32 | entry flags u8) ... |
//	unservable count u16 | unservable: hash u32 ... |
//	HMAC-SHA256 of everything before
//
// The incarnation is the sender's start time in nanoseconds, so a restarted
// announcer outranks everything its previous life sent; seq grows with every
// message of one incarnation. Receivers accept only strictly newer
// (incarnation, seq) pairs per peer and timestamps within a window of their
// own clock, so a captured message cannot be replayed to fake liveness.
//
// The entries are the sender's view of its peers (see quorum.go), one per
// peer, named by a 32-bit FNV-1a hash of the node name to keep a heartbeat
// of a 200-node cluster within one Ethernet frame. Unservable lists what the
// sender cannot answer on (hashes of pool names, see SetUnservable), so no
// node elects it for those VIPs. Version 1 carried no view;
// its messages are refused (a rolling update from it splits membership until
// every announcer runs version 2: see docs/architecture.md).
const (
	magic      = "PVLB"
	version    = 2
	headerLen  = 4 + 1 + 1 + 8 + 8 + 8 + 1 + 1
	entryLen   = 4 + 1
	macLen     = sha256.Size
	maxNameLen = 253 // a Kubernetes node name is a DNS subdomain
	// maxEntries bounds a message to about 10 KiB (fragmented on the node
	// network beyond 200 peers, still one datagram).
	maxEntries = 2000
	// maxUnservable bounds the unservable list (pools a node cannot serve).
	maxUnservable = 256
	// maxMessageLen is the largest valid message, the receive buffer size.
	maxMessageLen = headerLen + maxNameLen + 2 + maxEntries*entryLen + 2 + maxUnservable*4 + macLen
)

// Kind says what a message announces.
type Kind uint8

const (
	// Heartbeat: the sender is alive and answering.
	Heartbeat Kind = 1
	// Leaving: the sender is shutting down; take over its VIPs now.
	Leaving Kind = 2
	// Restarting: the sender stops answering now and will be back within
	// the receivers' RestartGrace (an announcer restarted in place, as a
	// DaemonSet rollout does). Receivers keep it elected for its VIPs
	// meanwhile, so they do not move: clients' neighbour caches keep
	// pointing at the node whose kube-proxy holds their connections.
	// Receivers of an older release refuse the kind and time the sender
	// out instead (a takeover, as before).
	Restarting Kind = 3
)

// Message flags.
const (
	// flagElectable: the sender may answer (it has quorum and is not held).
	flagElectable = 1 << 0
	knownFlags    = flagElectable
)

// Entry flags.
const (
	// entryHeard: the sender hears this peer.
	entryHeard = 1 << 0
	// entryVouch: the sender hears this peer both ways and the peer says
	// it may answer.
	entryVouch      = 1 << 1
	knownEntryFlags = entryHeard | entryVouch
)

type message struct {
	Kind        Kind
	Incarnation uint64
	Seq         uint64
	Time        time.Time
	Electable   bool
	Node        string
	Entries     []entry
	Unservable  []uint32
}

// entry is the sender's view of one peer.
type entry struct {
	Hash  uint32
	Flags uint8
}

// nameHash names a node in entries.
func nameHash(name string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return h.Sum32()
}

var (
	errMalformed = errors.New("malformed message")
	errBadAuth   = errors.New("authentication failed")
)

func (m message) marshal(secret []byte) ([]byte, error) {
	if len(m.Node) == 0 || len(m.Node) > maxNameLen {
		return nil, fmt.Errorf("node name length %d out of 1..%d", len(m.Node), maxNameLen)
	}
	if len(m.Entries) > maxEntries {
		return nil, fmt.Errorf("%d peers, at most %d", len(m.Entries), maxEntries)
	}
	if len(m.Unservable) > maxUnservable {
		return nil, fmt.Errorf("%d unservable pools, at most %d", len(m.Unservable), maxUnservable)
	}
	b := make([]byte, 0, headerLen+len(m.Node)+2+len(m.Entries)*entryLen+2+len(m.Unservable)*4+macLen)
	b = append(b, magic...)
	b = append(b, version, byte(m.Kind))
	b = binary.BigEndian.AppendUint64(b, m.Incarnation)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time.UnixNano()))
	var flags byte
	if m.Electable {
		flags |= flagElectable
	}
	b = append(b, flags, byte(len(m.Node)))
	b = append(b, m.Node...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Entries)))
	for _, e := range m.Entries {
		b = binary.BigEndian.AppendUint32(b, e.Hash)
		b = append(b, e.Flags)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Unservable)))
	for _, h := range m.Unservable {
		b = binary.BigEndian.AppendUint32(b, h)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(b)
	return mac.Sum(b), nil
}

// unmarshal checks the MAC against each accepted secret before looking at
// any field, so an unauthenticated sender learns nothing from how its packet
// is treated.
func unmarshal(b []byte, secrets ...[]byte) (message, error) {
	if len(b) < headerLen+1+2+2+macLen || string(b[:4]) != magic {
		return message{}, errMalformed
	}
	body, sum := b[:len(b)-macLen], b[len(b)-macLen:]
	authentic := false
	for _, s := range secrets {
		mac := hmac.New(sha256.New, s)
		mac.Write(body)
		if hmac.Equal(mac.Sum(nil), sum) {
			authentic = true
			break
		}
	}
	if !authentic {
		return message{}, errBadAuth
	}
	if body[4] != version {
		return message{}, fmt.Errorf("%w: version %d", errMalformed, body[4])
	}
	kind := Kind(body[5])
	if kind != Heartbeat && kind != Leaving && kind != Restarting {
		return message{}, fmt.Errorf("%w: kind %d", errMalformed, kind)
	}
	flags := body[30]
	if flags&^knownFlags != 0 {
		return message{}, fmt.Errorf("%w: flags %#x", errMalformed, flags)
	}
	n := int(body[headerLen-1])
	if n == 0 || len(body) < headerLen+n+2 {
		return message{}, fmt.Errorf("%w: name length", errMalformed)
	}
	rest := body[headerLen+n:]
	count := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if count > maxEntries || len(rest) < count*entryLen+2 {
		return message{}, fmt.Errorf("%w: %d entries in %d bytes", errMalformed, count, len(rest))
	}
	tail := rest[count*entryLen:]
	nu := int(binary.BigEndian.Uint16(tail))
	tail = tail[2:]
	if nu > maxUnservable || len(tail) != nu*4 {
		return message{}, fmt.Errorf("%w: %d unservable in %d bytes", errMalformed, nu, len(tail))
	}
	msg := message{
		Kind:        kind,
		Incarnation: binary.BigEndian.Uint64(body[6:14]),
		Seq:         binary.BigEndian.Uint64(body[14:22]),
		Time:        time.Unix(0, int64(binary.BigEndian.Uint64(body[22:30]))),
		Electable:   flags&flagElectable != 0,
		Node:        string(body[headerLen : headerLen+n]),
	}
	if count > 0 {
		msg.Entries = make([]entry, count)
	}
	for i := range count {
		e := entry{Hash: binary.BigEndian.Uint32(rest[i*entryLen:]), Flags: rest[i*entryLen+4]}
		if e.Flags&^knownEntryFlags != 0 {
			return message{}, fmt.Errorf("%w: entry flags %#x", errMalformed, e.Flags)
		}
		msg.Entries[i] = e
	}
	for i := range nu {
		msg.Unservable = append(msg.Unservable, binary.BigEndian.Uint32(tail[i*4:]))
	}
	return msg, nil
}
