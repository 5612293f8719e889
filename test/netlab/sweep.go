package netlab

import (
	"errors"
	"os"
	"regexp"
	"strconv"
	"syscall"
)

// labName matches namespaces made by New: "pvl<pid>-<seq>-<role>".
var labName = regexp.MustCompile(`^` + Prefix + `(\d+)-`)

// Sweep deletes namespaces left by labs whose test process is gone (a
// crashed or killed test binary never ran its t.Cleanup). Labs of running
// processes, including concurrently running test binaries, are left alone.
func Sweep() error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		m := labName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || processAlive(pid) {
			continue
		}
		if err := deleteNetns(e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func killPid(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
