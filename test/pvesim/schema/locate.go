package schema

import (
	"errors"
	"os"
	"path/filepath"
)

// File names of the schema copies kept in shared/pve-api.
const (
	PVE9File = "apidata-pve9.1.3.js"
	PVE8File = "apidata-pve8-stable-bookworm.js"
)

// FindDir returns the directory holding the schema files: $PVELB_PVE_API_DIR,
// else the first shared/pve-api found walking up from the working directory
// (the repository's parent holds shared/).
func FindDir() (string, error) {
	if d := os.Getenv("PVELB_PVE_API_DIR"); d != "" {
		if _, err := os.Stat(filepath.Join(d, PVE9File)); err != nil {
			return "", errors.New("PVELB_PVE_API_DIR=" + d + " holds no " + PVE9File)
		}
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		d := filepath.Join(dir, "shared", "pve-api")
		if _, err := os.Stat(filepath.Join(d, PVE9File)); err == nil {
			return d, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no shared/pve-api/" + PVE9File + " above the working directory; set PVELB_PVE_API_DIR")
		}
		dir = parent
	}
}
