// Package build checks that the Dockerfile, which cannot be built here (no
// Docker engine), ships what the Makefile builds: every binary it copies out
// of the build stage is produced by the make target that stage runs, as make
// itself expands that target (make -n), and every command the manifests run
// is in the image.
package build

import (
	"bufio"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const repo = "../.."

// instruction is one Dockerfile instruction with continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
	line int
}

func parseDockerfile(t *testing.T, data string) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(strings.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	if cur.Len() != 0 {
		t.Fatalf("Dockerfile ends inside a continued line (line %d)", start)
	}
	return out
}

// stage is a FROM block of the Dockerfile.
type stage struct {
	from, name string
	body       []instruction
}

func stages(t *testing.T, ins []instruction) []stage {
	var out []stage
	for _, in := range ins {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			var s stage
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					s.name = f[i+1]
					i++
				case s.from == "":
					s.from = f[i]
				}
			}
			out = append(out, s)
			continue
		}
		if len(out) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("line %d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		out[len(out)-1].body = append(out[len(out)-1].body, in)
	}
	return out
}

// makeCall finds the `make TARGET VAR=VALUE...` the build stage runs.
func makeCall(t *testing.T, s stage) (targets, overrides []string) {
	t.Helper()
	var calls int
	for _, in := range s.body {
		if in.cmd != "RUN" {
			continue
		}
		words := strings.Fields(in.args)
		i := slices.Index(words, "make")
		if i < 0 {
			continue
		}
		calls++
	words:
		for _, w := range words[i+1:] {
			switch {
			case w == "&&" || w == ";" || w == "||":
				break words
			case strings.HasPrefix(w, "-"):
				t.Fatalf("line %d: make flag %s: keep the build call plain so this test can follow it", in.line, w)
			case strings.Contains(w, "="):
				overrides = append(overrides, w)
			default:
				targets = append(targets, w)
			}
		}
	}
	if calls != 1 {
		t.Fatalf("build stage runs make %d times, want once", calls)
	}
	if len(targets) == 0 {
		// make with no target runs the first one; name it so the test is explicit.
		t.Fatal("the build stage must name its make target")
	}
	return targets, overrides
}

var dockerArgRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

var goBuildOut = regexp.MustCompile(`\bgo build\b.*\s-o\s+(\S+)\s+(.*)$`)

// builtBinaries asks make what the target does (dry run, no build) and
// derives each `go build -o DIR/ ./cmd/X...` output path.
func builtBinaries(t *testing.T, targets, overrides []string) (paths []string, static bool) {
	t.Helper()
	// The Dockerfile's shell expands ${ARG} before make runs; a dry run
	// here passes a stand-in value instead.
	var vars []string
	for _, o := range overrides {
		vars = append(vars, dockerArgRef.ReplaceAllString(o, "dockerfile-arg-$1"))
	}
	args := append([]string{"-n", "-C", repo}, append(targets, vars...)...)
	out, err := exec.Command("make", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("make %v: %v\n%s", args, err, out)
	}
	static = true
	for _, line := range strings.Split(string(out), "\n") {
		m := goBuildOut.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if !strings.Contains(line, "CGO_ENABLED=0") {
			static = false
		}
		dir, pkgs := m[1], strings.Fields(m[2])
		if !strings.HasSuffix(dir, "/") {
			if len(pkgs) != 1 {
				t.Fatalf("go build -o %s with %d packages: -o must be a directory ending in /", dir, len(pkgs))
			}
			paths = append(paths, dir)
			continue
		}
		for _, p := range pkgs {
			paths = append(paths, path.Join(dir, path.Base(p)))
		}
	}
	if len(paths) == 0 {
		t.Fatalf("make %v builds nothing (no go build -o line in):\n%s", args, out)
	}
	return paths, static
}

type copied struct{ src, dst string }

func copiesFrom(t *testing.T, s stage, from string) []copied {
	t.Helper()
	var out []copied
	for _, in := range s.body {
		if in.cmd != "COPY" {
			continue
		}
		f := strings.Fields(in.args)
		if !slices.Contains(f, "--from="+from) {
			continue
		}
		var rest []string
		for _, w := range f {
			if !strings.HasPrefix(w, "--") {
				rest = append(rest, w)
			}
		}
		if len(rest) != 2 {
			t.Fatalf("line %d: COPY --from=%s must copy one file to one path, got %v", in.line, from, rest)
		}
		out = append(out, copied{rest[0], rest[1]})
	}
	return out
}

func TestDockerfileCopiesWhatMakeBuilds(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	st := stages(t, parseDockerfile(t, string(data)))
	if len(st) < 2 {
		t.Fatalf("want a multi-stage build, got %d stages", len(st))
	}
	buildIdx := slices.IndexFunc(st, func(s stage) bool { return s.name == "build" })
	if buildIdx < 0 {
		t.Fatal("no stage named build")
	}
	final := st[len(st)-1]
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("final base %s: want distroless/static for static binaries", final.from)
	}
	targets, overrides := makeCall(t, st[buildIdx])
	built, static := builtBinaries(t, targets, overrides)
	if !static {
		t.Error("the make target must build with CGO_ENABLED=0: distroless/static has no libc")
	}
	copies := copiesFrom(t, final, "build")
	if len(copies) == 0 {
		t.Fatal("the final stage copies nothing from the build stage")
	}
	var shipped []string
	for _, c := range copies {
		if !slices.Contains(built, c.src) {
			t.Errorf("COPY --from=build %s: make %s %s does not build it (it builds %v)",
				c.src, strings.Join(targets, " "), strings.Join(overrides, " "), built)
		}
		shipped = append(shipped, c.dst)
	}
	// Nothing built is left out of the image.
	for _, b := range built {
		if !slices.ContainsFunc(copies, func(c copied) bool { return c.src == b }) {
			t.Errorf("make builds %s but the image does not ship it", b)
		}
	}
	for _, in := range final.body {
		if in.cmd == "ENTRYPOINT" {
			ep := strings.Trim(strings.Fields(strings.Trim(in.args, "[]"))[0], `",`)
			if !slices.Contains(shipped, ep) {
				t.Errorf("ENTRYPOINT %s is not a copied binary %v", ep, shipped)
			}
		}
		if in.cmd == "USER" && (strings.HasPrefix(in.args, "0") || in.args == "root") {
			t.Error("the image's default user must not be root")
		}
	}
	checkManifestCommands(t, shipped)
	// pvelb-announcer runs pvelb-bgp-speaker from its own directory.
	ann := slices.IndexFunc(shipped, func(p string) bool { return path.Base(p) == "pvelb-announcer" })
	if ann >= 0 && !slices.Contains(shipped, path.Join(path.Dir(shipped[ann]), "pvelb-bgp-speaker")) {
		t.Errorf("the image ships %s but no pvelb-bgp-speaker beside it, where the announcer looks for its BGP speaker", shipped[ann])
	}
}

var manifestCommand = regexp.MustCompile(`command:\s*\[\s*(/usr/local/bin/[a-z0-9-]+)`)

// checkManifestCommands: every command the manifests and the chart run, for
// which the repository has a main package (cmd/<name>), is in the image.
func checkManifestCommands(t *testing.T, shipped []string) {
	t.Helper()
	var files []string
	for _, g := range []string{"manifests/*.yaml", "manifests/charts/pvelb/templates/*.yaml"} {
		m, err := filepath.Glob(filepath.Join(repo, g))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	var checked int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range manifestCommand.FindAllStringSubmatch(string(data), -1) {
			bin := m[1]
			if _, err := os.Stat(filepath.Join(repo, "cmd", path.Base(bin))); err != nil {
				continue // not written yet; its manifest waits for it
			}
			checked++
			if !slices.Contains(shipped, bin) {
				t.Errorf("%s runs %s, which cmd/%s builds, but the image does not ship it: add it to COMMANDS in the Makefile and a COPY in the Dockerfile",
					f, bin, path.Base(bin))
			}
		}
	}
	if checked == 0 {
		t.Error("no manifest command checked: the pattern or the layout changed")
	}
}
