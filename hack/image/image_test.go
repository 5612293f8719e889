package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const repo = "../.."

var wantPlatforms = []string{"linux/amd64", "linux/arm64"}

var (
	layoutOnce sync.Once
	layoutDir  string
	layoutErr  error
	layoutTmp  string // removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if layoutTmp != "" {
		os.RemoveAll(layoutTmp)
	}
	os.Exit(code)
}

// builtLayout is the image `make image` built: $PVELB_IMAGE_LAYOUT (make
// test), else a fresh `make image` into a temporary directory (cross-compiles
// both platforms: minutes on a cold build cache).
func builtLayout(t *testing.T) string {
	t.Helper()
	if os.Getenv("PVELB_IMAGE_LAYOUT") == "" && testing.Short() {
		t.Skip("-short: no image built (make image, then PVELB_IMAGE_LAYOUT=bin/image/oci)")
	}
	layoutOnce.Do(func() {
		if d := os.Getenv("PVELB_IMAGE_LAYOUT"); d != "" {
			layoutDir = d
			return
		}
		tmp, err := os.MkdirTemp("", "pvelb-image-")
		if err != nil {
			layoutErr = err
			return
		}
		layoutTmp = tmp
		t.Logf("PVELB_IMAGE_LAYOUT unset: running make image into %s", tmp)
		out, err := exec.Command("make", "-C", repo, "--no-print-directory", "image", "IMAGE_DIR="+tmp, "IMAGE_TOOL="+tmp+"/pvelb-image").CombinedOutput()
		if err != nil {
			layoutErr = fmt.Errorf("make image: %v\n%s", err, out)
			return
		}
		layoutDir = filepath.Join(tmp, "oci")
	})
	if layoutErr != nil {
		t.Fatal(layoutErr)
	}
	return layoutDir
}

// platformImages opens the layout as a user of it would and returns its
// images by os/arch.
func platformImages(t *testing.T, idx v1.ImageIndex) map[string]v1.Image {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]v1.Image{}
	for _, d := range m.Manifests {
		if d.Platform == nil {
			t.Fatalf("index entry %s has no platform", d.Digest)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		out[d.Platform.OS+"/"+d.Platform.Architecture] = img
	}
	return out
}

func TestIndexAndConfigs(t *testing.T) {
	idx, err := readLayout(builtLayout(t))
	if err != nil {
		t.Fatal(err)
	}
	imgs := platformImages(t, idx)
	var got []string
	for p := range imgs {
		got = append(got, p)
	}
	slices.Sort(got)
	if !slices.Equal(got, wantPlatforms) {
		t.Fatalf("index platforms = %v, want %v", got, wantPlatforms)
	}
	for p, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS+"/"+cf.Architecture != p {
			t.Errorf("%s: config says %s/%s", p, cf.OS, cf.Architecture)
		}
		c := cf.Config
		if c.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532", p, c.User)
		}
		if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/pvelb-ccm"}) {
			t.Errorf("%s: entrypoint %v", p, c.Entrypoint)
		}
		for _, l := range []string{"org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.licenses"} {
			if c.Labels[l] == "" {
				t.Errorf("%s: label %s missing", p, l)
			}
		}
		files := imageFiles(t, img)
		for _, f := range []string{"etc/passwd", "etc/group", "etc/ssl/certs/ca-certificates.crt", "usr/local/bin/pvelb-ccm"} {
			if _, ok := files[f]; !ok {
				t.Errorf("%s: no /%s in the image", p, f)
			}
		}
		if pw := string(files["etc/passwd"].data); !strings.Contains(pw, "nonroot:x:65532:65532:") {
			t.Errorf("%s: /etc/passwd has no nonroot user 65532: %q", p, pw)
		}
		if !strings.Contains(string(files["etc/ssl/certs/ca-certificates.crt"].data), "BEGIN CERTIFICATE") {
			t.Errorf("%s: the CA bundle holds no certificate", p)
		}
		// As in distroless: a sticky world-writable /tmp and the nonroot
		// user's own home; everything else root's.
		if d := files["tmp"]; !d.dir || d.mode != 0o1777 {
			t.Errorf("%s: /tmp %+v, want a directory with mode 1777", p, d)
		}
		if d := files["home/nonroot"]; !d.dir || d.uid != 65532 || d.gid != 65532 {
			t.Errorf("%s: /home/nonroot %+v, want a directory owned by 65532:65532", p, d)
		}
		for name, f := range files {
			if name != "home/nonroot" && (f.uid != 0 || f.gid != 0) {
				t.Errorf("%s: /%s owned by %d:%d, want root", p, name, f.uid, f.gid)
			}
		}
	}
}

type imageFile struct {
	dir      bool
	mode     int64
	uid, gid int
	data     []byte
}

// imageFiles is the image's file system: its layers extracted in order.
func imageFiles(t *testing.T, img v1.Image) map[string]imageFile {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]imageFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		f := imageFile{dir: h.Typeflag == tar.TypeDir, mode: h.Mode, uid: h.Uid, gid: h.Gid}
		if h.Typeflag != tar.TypeReg && !f.dir {
			continue
		}
		if f.data, err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
		out[path.Clean(h.Name)] = f
	}
}

// TestLayoutTag: the layout names its index with the version, the tag
// `skopeo copy oci:DIR:TAG` and `ctr images import` use.
func TestLayoutTag(t *testing.T) {
	dir := builtLayout(t)
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	idx, err := readLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := platformImages(t, idx)["linux/amd64"].ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Manifests[0].Annotations[refNameAnnotation], cf.Config.Labels["org.opencontainers.image.version"]; got != want || got == "" {
		t.Errorf("layout tag %q, want the version label %q", got, want)
	}
}

// TestBinariesRun extracts the amd64 image's commands and runs them as the
// image would: --version must print the version and commit the image's labels
// carry (both come from the Makefile), --help must succeed.
func TestBinariesRun(t *testing.T) {
	idx, err := readLayout(builtLayout(t))
	if err != nil {
		t.Fatal(err)
	}
	img := platformImages(t, idx)["linux/amd64"]
	if img == nil {
		t.Fatal("no linux/amd64 image")
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	version, revision := cf.Config.Labels["org.opencontainers.image.version"], cf.Config.Labels["org.opencontainers.image.revision"]
	dir := t.TempDir()
	var cmds []string
	for p, f := range imageFiles(t, img) {
		if !strings.HasPrefix(p, "usr/local/bin/") || f.dir {
			continue
		}
		if f.mode&0o111 == 0 {
			t.Errorf("/%s is not executable (mode %o)", p, f.mode)
		}
		name := path.Base(p)
		if err := os.WriteFile(filepath.Join(dir, name), f.data, 0o755); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, name)
	}
	slices.Sort(cmds)
	if want := []string{"pvelb-announcer", "pvelb-bgp-speaker", "pvelb-ccm", "pvelbctl"}; !slices.Equal(cmds, want) {
		t.Errorf("commands in /usr/local/bin = %v, want %v", cmds, want)
	}
	for _, c := range cmds {
		for _, arg := range []string{"--version", "--help"} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := exec.CommandContext(ctx, filepath.Join(dir, c), arg).CombinedOutput()
			cancel()
			if err != nil {
				t.Errorf("%s %s: %v\n%s", c, arg, err, out)
				continue
			}
			if arg == "--version" {
				want := fmt.Sprintf("%s %s (commit %s,", c, version, revision)
				if !strings.HasPrefix(string(out), want) {
					t.Errorf("%s --version = %q, want it to start %q (the image's labels)", c, out, want)
				}
			} else if !strings.Contains(strings.ToLower(string(out)), "usage") {
				t.Errorf("%s --help printed no usage:\n%s", c, out)
			}
		}
	}
}

// TestMakePush pushes the layout with `make push` to a registry served in
// this process on loopback, then pulls the index back by the tag: the same
// digest, both platforms.
func TestMakePush(t *testing.T) {
	dir := builtLayout(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	image := strings.TrimPrefix(srv.URL, "http://") + "/pvelb/pvelb:v0.0.0-test"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "make", "-C", repo, "--no-print-directory", "push",
		"IMAGE="+image, "IMAGE_LAYOUT="+dir, "IMAGE_TOOL="+t.TempDir()+"/pvelb-image").CombinedOutput()
	if err != nil {
		t.Fatalf("make push: %v\n%s", err, out)
	}
	local, err := readLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := local.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	if pushed := "pushed " + ref.Context().Digest(want.String()).String(); !strings.Contains(string(out), pushed) {
		t.Errorf("make push did not print %q:\n%s", pushed, out)
	}
	remoteIdx, err := remote.Index(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	got, err := remoteIdx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("registry has %s, the layout %s", got, want)
	}
	imgs := platformImages(t, remoteIdx)
	for _, p := range wantPlatforms {
		img := imgs[p]
		if img == nil {
			t.Errorf("the pushed index has no %s", p)
			continue
		}
		// Every layer must be in the registry, not only the manifests.
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Errorf("%s: layer: %v", p, err)
				continue
			}
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				t.Errorf("%s: layer: %v", p, err)
			}
		}
	}
}

// TestReproducible: building the same binaries twice at the same time stamp
// gives the same index digest.
func TestReproducible(t *testing.T) {
	dir := builtLayout(t)
	binDir := filepath.Dir(dir)
	o := buildOptions{binDir: binDir, platforms: wantPlatforms, commands: []string{"pvelb-ccm", "pvelb-announcer", "pvelb-bgp-speaker", "pvelbctl"},
		caFile: "/etc/ssl/certs/ca-certificates.crt", version: "v1.0.0", revision: "abc", created: time.Unix(1700000000, 0).UTC()}
	var digests []v1.Hash
	for i := range 2 {
		idx, err := buildIndex(o)
		if err != nil {
			t.Fatal(err)
		}
		d, err := writeLayout(filepath.Join(t.TempDir(), fmt.Sprint(i)), idx, o.version)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of the same inputs: %s and %s", digests[0], digests[1])
	}
}
