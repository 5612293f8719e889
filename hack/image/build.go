package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// buildOptions say what to build; every timestamp in the image is created,
// so the same inputs give the same digests (a reproducible image).
type buildOptions struct {
	binDir    string   // holds <os>_<arch>/<command> for each platform
	platforms []string // os/arch
	commands  []string
	caFile    string
	version   string
	revision  string
	created   time.Time
}

// tarLayer writes files as one uncompressed layer in order, every entry
// owned by uid/gid as given and stamped with mtime.
func tarLayer(files []file, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		name := strings.TrimPrefix(f.path, "/")
		h := &tar.Header{Name: name, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: mtime, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			continue
		}
		data := f.data
		if data == nil {
			var err error
			if data, err = os.ReadFile(f.src); err != nil {
				return nil, fmt.Errorf("%s: %w", f.path, err)
			}
		}
		h.Typeflag, h.Size = tar.TypeReg, int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func layerOf(files []file, mtime time.Time) (v1.Layer, error) {
	data, err := tarLayer(files, mtime)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// buildIndex assembles the multi-platform image: a shared base layer (users,
// CA roots) and one layer of binaries per platform.
func buildIndex(o buildOptions) (v1.ImageIndex, error) {
	base, err := layerOf(baseFiles(o.caFile), o.created)
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.platforms {
		goos, arch, ok := strings.Cut(p, "/")
		if !ok {
			return nil, fmt.Errorf("platform %q: want os/arch", p)
		}
		files, err := binaryFiles(filepath.Join(o.binDir, goos+"_"+arch), o.commands)
		if err != nil {
			return nil, err
		}
		bins, err := layerOf(files, o.created)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		img, err = mutate.ConfigFile(img, &v1.ConfigFile{
			OS:           goos,
			Architecture: arch,
			Config: v1.Config{
				User:       user,
				Entrypoint: []string{entrypoint},
				Env:        env,
				Labels:     labels(o.version, o.revision),
				WorkingDir: "/",
			},
		})
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img,
			mutate.Addendum{Layer: base, History: v1.History{Created: v1.Time{Time: o.created}, CreatedBy: "pvelb: /etc/passwd, /etc/group, CA certificates"}},
			mutate.Addendum{Layer: bins, History: v1.History{Created: v1.Time{Time: o.created}, CreatedBy: "pvelb: " + strings.Join(o.commands, " ")}},
		)
		if err != nil {
			return nil, err
		}
		if img, err = mutate.CreatedAt(img, v1.Time{Time: o.created}); err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: goos, Architecture: arch}},
		})
	}
	return idx, nil
}

// writeLayout writes idx as an OCI image layout at dir (replacing what was
// there), tagged with the version, and returns its digest.
func writeLayout(dir string, idx v1.ImageIndex, tag string) (v1.Hash, error) {
	if err := os.RemoveAll(dir); err != nil {
		return v1.Hash{}, err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{refNameAnnotation: tag})); err != nil {
		return v1.Hash{}, err
	}
	return idx.Digest()
}

// writeArchive packs the layout at dir into one tar file (an "OCI archive",
// what `skopeo copy oci-archive:` and `ctr images import` read), with the
// same fixed timestamps.
func writeArchive(dir, archive string, mtime time.Time) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	var files []file
	for _, p := range paths {
		rel, _ := filepath.Rel(dir, p)
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		files = append(files, file{path: filepath.ToSlash(rel), mode: 0o644, dir: st.IsDir(), src: p})
		if st.IsDir() {
			files[len(files)-1].mode = 0o755
		}
	}
	data, err := tarLayer(files, mtime)
	if err != nil {
		return err
	}
	return os.WriteFile(archive, data, 0o644)
}
