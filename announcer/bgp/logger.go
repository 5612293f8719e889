package bgp

import (
	"sort"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"k8s.io/klog/v2"
)

// klogAdapter sends gobgp's logs to klog. gobgp is chatty at Info (every
// FSM step), so its Info goes to verbosity 2 and Debug to 5; warnings and
// errors are always shown.
type klogAdapter struct {
	logger klog.Logger
}

func (l klogAdapter) kv(fields gobgplog.Fields) []any {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	kv := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		kv = append(kv, k, fields[k])
	}
	return kv
}

func (l klogAdapter) Panic(msg string, f gobgplog.Fields) {
	l.logger.Error(nil, "gobgp: "+msg, l.kv(f)...)
	panic(msg)
}
func (l klogAdapter) Fatal(msg string, f gobgplog.Fields) {
	// gobgp calls Fatal only on broken invariants; crashing the announcer
	// would withdraw every route, so log loudly instead.
	l.logger.Error(nil, "gobgp fatal: "+msg, l.kv(f)...)
}
func (l klogAdapter) Error(msg string, f gobgplog.Fields) {
	l.logger.Error(nil, "gobgp: "+msg, l.kv(f)...)
}
func (l klogAdapter) Warn(msg string, f gobgplog.Fields) { l.logger.Info("gobgp: "+msg, l.kv(f)...) }
func (l klogAdapter) Info(msg string, f gobgplog.Fields) {
	l.logger.V(2).Info("gobgp: "+msg, l.kv(f)...)
}
func (l klogAdapter) Debug(msg string, f gobgplog.Fields) {
	l.logger.V(5).Info("gobgp: "+msg, l.kv(f)...)
}
func (l klogAdapter) SetLevel(gobgplog.LogLevel) {}
func (l klogAdapter) GetLevel() gobgplog.LogLevel {
	// gobgp skips building debug messages below this level.
	if l.logger.V(5).Enabled() {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
