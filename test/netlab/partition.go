package netlab

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Direction says which datagrams DropUDP drops.
type Direction int

// Directions for DropUDP.
const (
	// In drops datagrams that arrive on the lab link for local port port.
	In Direction = 1 << iota
	// Out drops datagrams sent on the lab link to remote port port.
	Out
	// Both is In and Out: the host and its peers no longer hear each other.
	Both = In | Out
)

func (d Direction) String() string {
	switch d {
	case In:
		return "in"
	case Out:
		return "out"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// partitionTable is the nftables table the partition helpers own in a host's
// namespace; Heal deletes it and nothing else, so rules of the software
// under test (kube-proxy's tables) are never touched.
const partitionTable = "pvlpart"

// DropUDP partitions the host at the UDP port: from now on, datagrams for
// port are dropped in dir on the host's lab link, IPv4 and IPv6 alike, until
// Heal. It cuts one protocol (an announcer's heartbeats, say) and leaves ARP,
// NDP and everything else flowing, which CutLink cannot; In or Out alone make
// a one-way partition. Calls add up: In then Out is Both.
//
// The rules sit on the link itself (netdev ingress and egress hooks), not in
// the IP stack's input and output hooks: a drop in the output hook fails the
// sender's sendto with EPERM, which no real partition does and which
// software under test could notice. At egress the sender sees success, as if
// the datagram had been lost on the wire.
func (h *Host) DropUDP(port int, dir Direction) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("drop udp: port %d out of 1..65535", port)
	}
	if dir&Both == 0 || dir&^Both != 0 {
		return fmt.Errorf("drop udp: invalid direction %v", dir)
	}
	// The table and chains are declared, which creates them only if they
	// are missing; the rules are added.
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev %s {\n", partitionTable)
	fmt.Fprintf(&b, "\tchain in { type filter hook ingress device %q priority filter; policy accept; }\n", h.Link)
	fmt.Fprintf(&b, "\tchain out { type filter hook egress device %q priority filter; policy accept; }\n", h.Link)
	b.WriteString("}\n")
	if dir&In != 0 {
		fmt.Fprintf(&b, "add rule netdev %s in udp dport %d counter drop\n", partitionTable, port)
	}
	if dir&Out != 0 {
		fmt.Fprintf(&b, "add rule netdev %s out udp dport %d counter drop\n", partitionTable, port)
	}
	return h.nft(b.String())
}

// Heal removes every rule DropUDP added in the host's namespace. It is safe
// to call when nothing was dropped.
func (h *Host) Heal() error {
	// Declaring the table first makes the delete succeed when it is absent.
	return h.nft(fmt.Sprintf("table netdev %[1]s\ndelete table netdev %[1]s\n", partitionTable))
}

// nft applies a ruleset script in the host's namespace, as one transaction.
func (h *Host) nft(script string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := h.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s\nscript:\n%s", h.Netns, err, strings.TrimSpace(string(out)), script)
	}
	return nil
}
