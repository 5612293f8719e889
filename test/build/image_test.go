package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The image `make image` builds (hack/image, no container engine) and the
// Dockerfile (for people with one) must be the same image: the same platforms,
// binaries, user, entrypoint and labels. This reads the OCI layout with the
// standard library only, as the specification lays it out.

var (
	imageOnce   sync.Once
	imageLayout string
	imageErr    error
	imageTmp    string // removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if imageTmp != "" {
		os.RemoveAll(imageTmp)
	}
	os.Exit(code)
}

// builtImage is $PVELB_IMAGE_LAYOUT (make test), else a fresh `make image`
// into a temporary directory (minutes on a cold build cache: it
// cross-compiles every platform).
func builtImage(t *testing.T) string {
	t.Helper()
	if os.Getenv("PVELB_IMAGE_LAYOUT") == "" && testing.Short() {
		t.Skip("-short: no image built (make image, then PVELB_IMAGE_LAYOUT=bin/image/oci)")
	}
	imageOnce.Do(func() {
		if d := os.Getenv("PVELB_IMAGE_LAYOUT"); d != "" {
			imageLayout = d
			return
		}
		tmp, err := os.MkdirTemp("", "pvelb-image-")
		if err != nil {
			imageErr = err
			return
		}
		imageTmp = tmp
		out, err := exec.Command("make", "-C", repo, "--no-print-directory", "image", "IMAGE_DIR="+tmp, "IMAGE_TOOL="+tmp+"/pvelb-image").CombinedOutput()
		if err != nil {
			imageErr = fmt.Errorf("make image: %v\n%s", err, out)
		}
		imageLayout = filepath.Join(tmp, "oci")
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageLayout
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

type ociManifest struct {
	Manifests []descriptor `json:"manifests"` // an index
	Config    descriptor   `json:"config"`    // an image manifest
	Layers    []descriptor `json:"layers"`
}

type ociConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Config       struct {
		User       string            `json:"User"`
		Entrypoint []string          `json:"Entrypoint"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
}

// blob reads a content-addressed blob and checks its digest.
func blob(t *testing.T, layout, digest string) []byte {
	t.Helper()
	alg, hex, ok := strings.Cut(digest, ":")
	if !ok || alg != "sha256" {
		t.Fatalf("digest %q: want sha256", digest)
	}
	data, err := os.ReadFile(filepath.Join(layout, "blobs", alg, hex))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%x", sha256.Sum256(data)); got != hex {
		t.Fatalf("blob %s has digest %s", digest, got)
	}
	return data
}

func readJSON(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

// builtPlatform is one platform's image: its config and its files (regular
// files, layers applied in order) with their modes and contents.
type builtPlatform struct {
	config ociConfig
	files  map[string]fileEntry
}

type fileEntry struct {
	mode int64
	data []byte
}

func readImage(t *testing.T, layout string) map[string]builtPlatform {
	t.Helper()
	var top ociManifest
	data, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	readJSON(t, data, &top)
	if len(top.Manifests) != 1 {
		t.Fatalf("index.json lists %d entries, want the one multi-platform index", len(top.Manifests))
	}
	var idx ociManifest
	readJSON(t, blob(t, layout, top.Manifests[0].Digest), &idx)
	out := map[string]builtPlatform{}
	for _, d := range idx.Manifests {
		if d.Platform == nil {
			t.Fatalf("index entry %s has no platform", d.Digest)
		}
		var m ociManifest
		readJSON(t, blob(t, layout, d.Digest), &m)
		var p builtPlatform
		readJSON(t, blob(t, layout, m.Config.Digest), &p.config)
		p.files = map[string]fileEntry{}
		for _, l := range m.Layers {
			zr, err := gzip.NewReader(bytes.NewReader(blob(t, layout, l.Digest)))
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(zr)
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if h.Typeflag == tar.TypeReg {
					b, err := io.ReadAll(tr)
					if err != nil {
						t.Fatal(err)
					}
					p.files["/"+path.Clean(h.Name)] = fileEntry{mode: h.Mode, data: b}
				}
			}
		}
		out[d.Platform.OS+"/"+d.Platform.Architecture] = p
	}
	return out
}

// finalStage is what the Dockerfile's final stage says about the image.
type finalStage struct {
	user       string
	entrypoint []string
	labels     map[string]string // values as written, ${ARG} unexpanded
	binaries   []string          // COPY --from=build destinations
	platforms  []string          // the buildx --platform the header documents
}

var (
	labelPair     = regexp.MustCompile(`([A-Za-z0-9._-]+)="([^"]*)"`)
	buildxPlatfrm = regexp.MustCompile(`(?m)^#.*docker buildx build --platform (\S+)`)
)

func dockerfileFinal(t *testing.T) finalStage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	st := stages(t, parseDockerfile(t, string(data)))
	final := st[len(st)-1]
	f := finalStage{labels: map[string]string{}}
	for _, in := range final.body {
		switch in.cmd {
		case "USER":
			f.user = in.args
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &f.entrypoint); err != nil {
				t.Fatalf("line %d: ENTRYPOINT must be a JSON array: %v", in.line, err)
			}
		case "LABEL":
			for _, m := range labelPair.FindAllStringSubmatch(in.args, -1) {
				f.labels[m[1]] = m[2]
			}
		}
	}
	for _, c := range copiesFrom(t, final, "build") {
		f.binaries = append(f.binaries, c.dst)
	}
	if m := buildxPlatfrm.FindSubmatch(data); m != nil {
		f.platforms = strings.Split(string(m[1]), ",")
	}
	if f.user == "" || len(f.entrypoint) == 0 || len(f.labels) == 0 || len(f.binaries) == 0 || len(f.platforms) == 0 {
		t.Fatalf("Dockerfile: could not read user, entrypoint, labels, binaries and platforms: %+v", f)
	}
	return f
}

var dockerArg = regexp.MustCompile(`^\$\{?([A-Z_]+)\}?$`)

func TestImageMatchesDockerfile(t *testing.T) {
	want := dockerfileFinal(t)
	img := readImage(t, builtImage(t))
	var platforms []string
	for p := range img {
		platforms = append(platforms, p)
	}
	slices.Sort(platforms)
	slices.Sort(want.platforms)
	if !slices.Equal(platforms, want.platforms) {
		t.Errorf("make image builds %v, the Dockerfile documents %v", platforms, want.platforms)
	}
	for p, got := range img {
		c := got.config.Config
		if got.config.OS+"/"+got.config.Architecture != p {
			t.Errorf("%s: config is for %s/%s", p, got.config.OS, got.config.Architecture)
		}
		if c.User != want.user {
			t.Errorf("%s: user %q, the Dockerfile's USER %q", p, c.User, want.user)
		}
		if !slices.Equal(c.Entrypoint, want.entrypoint) {
			t.Errorf("%s: entrypoint %v, the Dockerfile's %v", p, c.Entrypoint, want.entrypoint)
		}
		for k, v := range want.labels {
			have, ok := c.Labels[k]
			switch {
			case !ok:
				t.Errorf("%s: no label %s (Dockerfile: %q)", p, k, v)
			case dockerArg.MatchString(v) && have == "":
				// The value is the build's (hack/image checks the binaries
				// print the same); it must be set.
				t.Errorf("%s: label %s is empty: make image must set the build argument %s from VERSION/COMMIT", p, k, v)
			case !dockerArg.MatchString(v) && have != v:
				t.Errorf("%s: label %s = %q, the Dockerfile's %q", p, k, have, v)
			}
		}
		for k := range c.Labels {
			if _, ok := want.labels[k]; !ok {
				t.Errorf("%s: label %s is not in the Dockerfile", p, k)
			}
		}
		var bins []string
		for f, e := range got.files {
			if e.mode&0o111 != 0 {
				bins = append(bins, f)
			}
		}
		slices.Sort(bins)
		shipped := slices.Sorted(slices.Values(want.binaries))
		if !slices.Equal(bins, shipped) {
			t.Errorf("%s: executables %v, the Dockerfile copies %v", p, bins, shipped)
		}
		// distroless/static:nonroot, the Dockerfile's base, has these.
		if pw := string(got.files["/etc/passwd"].data); !strings.Contains(pw, "nonroot:x:65532:65532:") {
			t.Errorf("%s: /etc/passwd lacks the nonroot user: %q", p, pw)
		}
		if len(got.files["/etc/ssl/certs/ca-certificates.crt"].data) == 0 {
			t.Errorf("%s: no CA certificates", p)
		}
	}
	// The binaries are those `make build` links: on a linux/amd64 host the
	// host build (PVELB_BIN_DIR, make test) and the image's are byte for byte
	// the same (Go builds are reproducible with -trimpath).
	bin := os.Getenv("PVELB_BIN_DIR")
	host := runtime.GOOS + "/" + runtime.GOARCH
	if bin == "" || img[host].files == nil {
		return
	}
	for _, b := range want.binaries {
		local, err := os.ReadFile(filepath.Join(bin, path.Base(b)))
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(local) != sha256.Sum256(img[host].files[b].data) {
			t.Errorf("%s in the %s image differs from %s/%s (make build): not the same build", b, host, bin, path.Base(b))
		}
	}
}

// TestDockerfilePassesVersion: the Dockerfile's build runs make with the
// VERSION and COMMIT the Makefile links into the binaries, from its own
// VERSION and REVISION arguments, which its labels use too.
func TestDockerfilePassesVersion(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	st := stages(t, parseDockerfile(t, string(data)))
	b := slices.IndexFunc(st, func(s stage) bool { return s.name == "build" })
	if b < 0 {
		t.Fatal("no build stage")
	}
	targets, overrides := makeCall(t, st[b])
	for _, want := range []string{"VERSION=${VERSION}", "COMMIT=${REVISION}"} {
		if !slices.Contains(overrides, want) {
			t.Errorf("the build stage's make call %v lacks %s", overrides, want)
		}
	}
	out, err := exec.Command("make", append([]string{"-n", "-C", repo, "VERSION=v9.9.9", "COMMIT=c0ffee"}, targets...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("make -n: %v\n%s", err, out)
	}
	for _, want := range []string{"github.com/pvelb/pvelb/cmd/internal/buildinfo.Version=v9.9.9", "github.com/pvelb/pvelb/cmd/internal/buildinfo.Commit=c0ffee"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make %v does not link %s:\n%s", targets, want, out)
		}
	}
	final := dockerfileFinal(t)
	if final.labels["org.opencontainers.image.version"] != "${VERSION}" || final.labels["org.opencontainers.image.revision"] != "${REVISION}" {
		t.Errorf("the version and revision labels must come from the VERSION and REVISION arguments: %v", final.labels)
	}
}
