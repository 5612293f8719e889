// Package speakerproc runs pvelb-announcer's BGP speaker as a child
// process, pvelb-bgp-speaker, so that nodes without a BGPPeer never map
// gobgp (with gRPC, protobuf and viper it doubled the announcer's binary and
// its resident memory). Parent and child talk over the child's stdin and
// stdout, one JSON object per line:
//
//	parent -> child  {"seq":1,"start":{...Config}}       first, once
//	                 {"seq":2,"desired":{...}}          every reconcile
//	                 {"seq":3,"states":true}            every metrics scrape
//	                 {"seq":4,"stop":true}              withdraw, close, exit
//	child -> parent  {"seq":N,"error":"...","states":{...}}  the answer to request N
//
// The child withdraws its routes and exits when its stdin closes, so a
// parent that dies leaves no routes behind. Lines carry BGP passwords:
// neither side ever logs a line or puts one in an error.
//
// This package links no BGP implementation; the child's side (Serve) drives
// any Speaker, and cmd/pvelb-bgp-speaker gives it the gobgp one.
package speakerproc

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
)

// Config is the speaker's global configuration (bgp.Config on the wire).
type Config struct {
	RouterID     netip.Addr    `json:"routerID"`
	LocalASN     uint32        `json:"localASN"`
	ListenPort   int32         `json:"listenPort"`
	NextHopIPv4  netip.Addr    `json:"nextHopIPv4,omitzero"`
	NextHopIPv6  netip.Addr    `json:"nextHopIPv6,omitzero"`
	ConnectRetry time.Duration `json:"connectRetry,omitempty"`
}

// Request is one line from parent to child; exactly one of Start, Desired,
// States and Stop is set.
type Request struct {
	Seq     uint64           `json:"seq"`
	Start   *Config          `json:"start,omitempty"`
	Desired *desired.Desired `json:"desired,omitempty"`
	States  bool             `json:"states,omitempty"`
	Stop    bool             `json:"stop,omitempty"`
}

func (r Request) validate() error {
	n := 0
	if r.Start != nil {
		n++
	}
	if r.Desired != nil {
		n++
	}
	if r.States {
		n++
	}
	if r.Stop {
		n++
	}
	if r.Seq == 0 {
		return errors.New("request: seq: must be at least 1")
	}
	if n != 1 {
		return fmt.Errorf("request %d: exactly one of start, desired, states and stop must be set, got %d", r.Seq, n)
	}
	return nil
}

// Reply is one line from child to parent: the answer to request Seq.
type Reply struct {
	Seq    uint64  `json:"seq"`
	Error  string  `json:"error,omitempty"`
	States *States `json:"states,omitempty"`
}

// States is what the speaker reports for metrics.
type States struct {
	Peers []PeerState `json:"peers"`
	// Routes counts the VIP routes the speaker originates.
	Routes int `json:"routes"`
}

// PeerState is one session's state (bgp.PeerState on the wire).
type PeerState struct {
	Name    string     `json:"name"`
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm, established or unknown.
	State      string    `json:"state"`
	Since      time.Time `json:"since,omitzero"`
	Advertised uint64    `json:"advertised"`
}

// maxLine bounds one line: a Desired for thousands of VIPs and peers fits
// easily, a runaway peer cannot make the other side buffer without end.
const maxLine = 16 << 20

// lineReader decodes one JSON value per line.
type lineReader struct{ sc *bufio.Scanner }

func newLineReader(r io.Reader) *lineReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	return &lineReader{sc: sc}
}

// next decodes the next line into v; io.EOF at the end of the stream. The
// error never quotes the line, which may hold passwords.
func (l *lineReader) next(v any) error {
	if !l.sc.Scan() {
		if err := l.sc.Err(); err != nil {
			return fmt.Errorf("reading: %w", err)
		}
		return io.EOF
	}
	if err := json.Unmarshal(l.sc.Bytes(), v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("line of %d bytes is not JSON (offset %d)", len(l.sc.Bytes()), se.Offset)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("field %s: a JSON %s is not a %s", te.Field, te.Value, te.Type)
		}
		return errors.New("line does not decode (contents withheld: they may hold passwords)")
	}
	return nil
}

// writeLine encodes v as one line.
func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
