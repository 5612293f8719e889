package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"k8s.io/klog/v2/textlogger"
)

func TestSecretNeverPrints(t *testing.T) {
	const s = "0b8c7f3e-super-secret"
	sec := Secret(s)
	c := Cluster{Region: "pve-east", TokenSecret: sec}
	cfg := &Config{Clusters: []Cluster{c}}

	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":        fmt.Sprintf("%v", sec),
		"%s":        fmt.Sprintf("%s", sec),
		"%q":        fmt.Sprintf("%q", sec),
		"%x":        fmt.Sprintf("%x", sec),
		"%X":        fmt.Sprintf("%X", sec),
		"%d":        fmt.Sprintf("%d", sec),
		"%#v":       fmt.Sprintf("%#v", sec),
		"%+v":       fmt.Sprintf("%+v", sec),
		"%10s":      fmt.Sprintf("%10s", sec),
		"String":    sec.String(),
		"struct %v": fmt.Sprintf("%v", c),
		"struct +v": fmt.Sprintf("%+v", cfg),
		"struct #v": fmt.Sprintf("%#v", c),
		"error":     fmt.Errorf("wrapped: %v", c).Error(),
		"json":      string(js),
		"joined":    errors.Join(fmt.Errorf("%s", sec)).Error(),
	}
	var logged strings.Builder
	logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(&logged)))
	logger.Info("config", "secret", sec, "cluster", c, "config", cfg)
	logger.Info("again", "secret", sec)
	outputs["logr"] = logged.String()

	for name, out := range outputs {
		if strings.Contains(out, s) || strings.Contains(out, fmt.Sprintf("%x", s)) || strings.Contains(out, fmt.Sprintf("%X", s)) {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
		if !strings.Contains(out, "redacted") {
			t.Errorf("%s does not show the redaction marker: %s", name, out)
		}
	}
	if sec.Reveal() != s {
		t.Errorf("Reveal = %q", sec.Reveal())
	}
	if Secret("").String() != "" {
		t.Errorf("empty secret should print empty")
	}
}
