package lab

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestAnalyzeOutage(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	// Pings every 10 ms from t0; replies 1 ms later except seqs 5..34.
	rec := pingRecord{Sent: map[int]time.Time{}, Recv: map[int]time.Time{}}
	for seq := 0; seq < 50; seq++ {
		rec.Sent[seq] = ms(seq * 10)
		if seq < 5 || seq >= 35 {
			rec.Recv[seq] = ms(seq*10 + 1)
		}
	}
	o, err := analyzeOutage(rec, ms(45))
	if err != nil {
		t.Fatal(err)
	}
	if o.Gap != 310*time.Millisecond || o.Lost != 30 || o.Sent != 50 || o.Recovered != 306*time.Millisecond {
		t.Fatalf("outage %+v, want gap 310ms, 30 of 50 lost, recovered after 306ms", o)
	}

	// Replies to requests sent before the fault do not count as recovery.
	rec = pingRecord{Sent: map[int]time.Time{1: ms(0), 2: ms(10), 3: ms(20)}, Recv: map[int]time.Time{1: ms(1), 2: ms(30)}}
	if _, err := analyzeOutage(rec, ms(15)); err == nil {
		t.Fatal("no reply to a request sent after the fault, yet no error")
	}
}

func TestPreflightNamesWhatIsMissing(t *testing.T) {
	var out bytes.Buffer
	err := Run(context.Background(), Options{BinDir: "/nonexistent-bin", RepoDir: "/nonexistent-repo", SchemaFile: "", Out: &out})
	if err == nil {
		t.Fatal("Run started without binaries, CRDs or schema")
	}
	for _, want := range []string{
		"kube-apiserver in /nonexistent-bin (make kube-bins build)",
		"pvelb-announcer in /nonexistent-bin",
		"CRDs in /nonexistent-repo/manifests/crds",
		"Proxmox API schema",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if out.Len() != 0 {
		t.Errorf("the lab printed before its preflight passed:\n%s", out.String())
	}
}

func TestRunRefusesBadNodeCount(t *testing.T) {
	for _, n := range []int{1, 9, 21, -1} {
		if err := Run(context.Background(), Options{Nodes: n}); err == nil || !strings.Contains(err.Error(), "--nodes") {
			t.Errorf("Nodes %d: error %v, want one naming --nodes", n, err)
		}
	}
}
