package build

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestReleaseVersionCheck runs the release workflow's first check, which only
// runs on a pushed tag, against the repository as it is: with the version
// manifests/kustomization.yaml names it must pass, with another it must
// stop, so a reformatted file fails here and not at release time.
func TestReleaseVersionCheck(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repo, ".github/workflows/release.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		Jobs map[string]struct {
			Steps []struct {
				Name string `json:"name"`
				Run  string `json:"run"`
			} `json:"steps"`
		} `json:"jobs"`
	}
	if err := yaml.Unmarshal(data, &wf); err != nil {
		t.Fatal(err)
	}
	var script string
	for _, j := range wf.Jobs {
		for _, s := range j.Steps {
			if strings.HasPrefix(s.Name, "The tag is the version") {
				script = s.Run
			}
		}
	}
	if script == "" {
		t.Fatal("release.yml has no step \"The tag is the version ...\"")
	}
	k, err := os.ReadFile(filepath.Join(repo, "manifests/kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s+newTag:\s*(\S+)$`).FindSubmatch(k)
	if m == nil {
		t.Fatal("manifests/kustomization.yaml: no images newTag")
	}
	version := string(m[1])
	run := func(v string) ([]byte, error) {
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "VERSION="+v)
		return cmd.CombinedOutput()
	}
	if out, err := run(version); err != nil {
		t.Errorf("the release check fails for %s, the version the repository names: %v\n%s", version, err, out)
	}
	if out, err := run(version + "-not-this"); err == nil {
		t.Errorf("the release check passes for a tag the repository does not name:\n%s", out)
	}
}
