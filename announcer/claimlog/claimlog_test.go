package claimlog

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestLog(t *testing.T) {
	l := New()
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	vip := netip.MustParseAddr("192.0.2.10")
	macA, _ := net.ParseMAC("02:00:00:00:00:0a")
	macB, _ := net.ParseMAC("02:00:00:00:00:0b")
	l.Record(vip, macA, "eth0")
	now = now.Add(time.Second)
	l.Record(vip, macA, "eth0")
	l.Record(netip.MustParseAddr("::ffff:192.0.2.10"), macB, "eth1")
	got := l.Since(time.Unix(999, 0))
	if len(got) != 2 || got[0].MAC != macA.String() || got[0].Count != 2 || got[1].Interface != "eth1" || got[1].IP != vip {
		t.Fatalf("Since = %+v", got)
	}
	if got := l.Since(time.Unix(1000, 0)); len(got) != 2 {
		t.Fatalf("both were seen after 1000: %+v", got)
	}
	if got := l.Since(time.Unix(1001, 0)); len(got) != 0 {
		t.Fatalf("nothing after 1001: %+v", got)
	}
	// Bounded: the oldest goes.
	for i := 0; i < maxEntries+10; i++ {
		now = now.Add(time.Millisecond)
		l.Record(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), macA, "eth0")
	}
	if n := len(l.Since(time.Time{})); n != maxEntries {
		t.Fatalf("%d entries, want %d", n, maxEntries)
	}
	var nilLog *Log
	nilLog.Record(vip, macA, "eth0") // a responder without a log records nothing
}
