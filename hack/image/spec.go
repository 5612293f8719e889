package main

import (
	"fmt"
	"sort"
)

// What the image is, besides the binaries: the same user, entrypoint, paths
// and labels as the Dockerfile's final stage (test/build checks the built
// image against the Dockerfile, so a change to one without the other fails).
const (
	binDir     = "/usr/local/bin"
	entrypoint = binDir + "/pvelb-ccm"
	// distroless/static's "nonroot" user, which the Dockerfile's base brings.
	nonrootID = 65532
	user      = "65532:65532"
	caPath    = "/etc/ssl/certs/ca-certificates.crt"
	// The OCI annotation that names an image in a layout (its tag).
	refNameAnnotation = "org.opencontainers.image.ref.name"
)

// labels are the Dockerfile's LABELs with its VERSION and REVISION build
// arguments filled in.
func labels(version, revision string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "pvelb",
		"org.opencontainers.image.description": "LoadBalancer Services and a cloud-controller-manager for Talos clusters on Proxmox VE",
		"org.opencontainers.image.source":      "https://github.com/pvelb/pvelb",
		"org.opencontainers.image.url":         "https://github.com/pvelb/pvelb",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.revision":    revision,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
}

// env is distroless/static's environment (what the Dockerfile's image
// inherits).
var env = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"SSL_CERT_FILE=" + caPath,
}

// passwd and group hold what distroless/static:nonroot has: root (the
// announcer's DaemonSet runs as root with NET_RAW), nobody and nonroot.
const passwd = `root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
`

const group = `root:x:0:
nobody:x:65534:
nonroot:x:65532:
`

// file is one entry of a layer.
type file struct {
	path     string // absolute, without a trailing slash
	mode     int64  // permission bits, plus 01000 (sticky) where needed
	dir      bool
	uid, gid int
	data     []byte
	src      string // read from this host file when data is nil and dir is false
}

// baseFiles are the platform-independent files: the users, the CA roots and
// the directories a process may expect (a writable /tmp when the root file
// system is not read-only, the nonroot user's home).
func baseFiles(caFile string) []file {
	return []file{
		{path: "/etc", mode: 0o755, dir: true},
		{path: "/etc/passwd", mode: 0o644, data: []byte(passwd)},
		{path: "/etc/group", mode: 0o644, data: []byte(group)},
		{path: "/etc/ssl", mode: 0o755, dir: true},
		{path: "/etc/ssl/certs", mode: 0o755, dir: true},
		{path: caPath, mode: 0o644, src: caFile},
		{path: "/home", mode: 0o755, dir: true},
		{path: "/home/nonroot", mode: 0o700, dir: true, uid: nonrootID, gid: nonrootID},
		{path: "/tmp", mode: 0o1777, dir: true},
		{path: "/usr", mode: 0o755, dir: true},
		{path: "/usr/local", mode: 0o755, dir: true},
		{path: binDir, mode: 0o755, dir: true},
	}
}

// binaryFiles are one platform's commands, from dir (the output of
// `make build` for that platform).
func binaryFiles(dir string, commands []string) ([]file, error) {
	if len(commands) == 0 {
		return nil, fmt.Errorf("no commands to put in the image")
	}
	sorted := append([]string(nil), commands...)
	sort.Strings(sorted)
	var out []file
	for _, c := range sorted {
		out = append(out, file{path: binDir + "/" + c, mode: 0o755, src: dir + "/" + c})
	}
	return out, nil
}
