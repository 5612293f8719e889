package buildinfo

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	oldV, oldC := Version, Commit
	t.Cleanup(func() { Version, Commit = oldV, oldC })
	Version, Commit = "v1.2.3", "0123456789abcdef"
	got := String("pvelb-ccm")
	if !strings.HasPrefix(got, "pvelb-ccm v1.2.3 (commit 0123456789abcdef, go") {
		t.Errorf("String = %q", got)
	}
	Commit = ""
	if Revision() == "" {
		t.Error("Revision is empty without a linker-set commit: want the embedded VCS revision or \"unknown\"")
	}
}
