package pve

import "testing"

func TestReleaseOf(t *testing.T) {
	for _, tc := range []struct {
		version string
		major   int
		agent   string
	}{
		{"9.1.3", 9, "VM.GuestAgent.Audit"},
		{"8.4.1", 8, "VM.Monitor"},
		{"7.4", 8, "VM.Monitor"},           // older than supported: the oldest's facts
		{"10.0", 9, "VM.GuestAgent.Audit"}, // newer: the newest's
		{"", 9, "VM.GuestAgent.Audit"},     // unknown: the newest's
	} {
		r := ReleaseOf(tc.version)
		if r.Major != tc.major || r.GuestAgentPrivilege != tc.agent {
			t.Errorf("ReleaseOf(%q) = %+v, want major %d, %s", tc.version, r, tc.major, tc.agent)
		}
	}
}
