package schema

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Messages PVE::JSONSchema puts in the "errors" map of a 400.
const (
	MsgNotDefined = "property is not defined in schema and the schema does not allow additional properties"
	MsgMissing    = "property is missing and it is not optional"
)

var (
	integerRe = regexp.MustCompile(`^[+-]?\d+$`)
	numberRe  = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$`)
)

// Validate checks request parameters (path, query and body merged) against
// the method's schema. Values are strings when they came from a form or query
// string, and decoded JSON values (string, json.Number, float64, bool, nil,
// []any, map[string]any) when they came from a JSON body, which may therefore
// carry true/false. It returns the parameters as canonical strings (booleans
// as "1"/"0") and the per-parameter errors, nil when there are none.
func (m *Method) Validate(params map[string]any) (map[string]string, map[string]string) {
	out := map[string]string{}
	errs := map[string]string{}
	for name, raw := range params {
		p := m.Param(name)
		if p == nil {
			if !m.AdditionalProperties {
				errs[name] = MsgNotDefined
			} else if s, ok := scalarString(raw); ok {
				out[name] = s
			}
			continue
		}
		if raw == nil {
			continue // JSON null is "not defined"; the missing check below decides
		}
		v, msg := p.Check(raw)
		if msg != "" {
			errs[name] = msg
			continue
		}
		out[name] = v
	}
	for name, p := range m.Params {
		if strings.HasSuffix(name, "[n]") {
			continue
		}
		if _, ok := params[name]; ok && params[name] != nil {
			continue
		}
		if !p.Optional && p.Alias == "" {
			errs[name] = MsgMissing
		}
	}
	if len(errs) == 0 {
		return out, nil
	}
	return out, errs
}

// Check validates one value in the order PVE::JSONSchema::check_prop does
// (type, length, range, enum, pattern, format) and returns its canonical
// string form or the error message.
func (p *Property) Check(raw any) (string, string) {
	v, msg := p.checkType(raw)
	if msg != "" {
		return "", msg
	}
	if p.Type == "array" || p.Type == "object" {
		return v, ""
	}
	n := utf8.RuneCountInString(v)
	if p.MaxLength != nil && n > *p.MaxLength {
		return "", fmt.Sprintf("value may only be %d characters long", *p.MaxLength)
	}
	if p.MinLength != nil && n < *p.MinLength {
		return "", fmt.Sprintf("value must be at least %d characters long", *p.MinLength)
	}
	if numberRe.MatchString(v) {
		f, _ := strconv.ParseFloat(v, 64)
		if p.Maximum != nil && f > *p.Maximum {
			return "", "value must have a maximum value of " + num(*p.Maximum)
		}
		if p.Minimum != nil && f < *p.Minimum {
			return "", "value must have a minimum value of " + num(*p.Minimum)
		}
	}
	if len(p.Enum) > 0 && !contains(p.Enum, v) {
		return "", fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", v, strings.Join(p.Enum, "', '"))
	}
	if p.pattern != nil && !p.pattern.MatchString(v) {
		return "", "value does not match the regex pattern"
	}
	if p.Format != "" {
		if err := checkFormat(p.Format, v); err != nil {
			return "", "invalid format - " + err.Error() + "\n"
		}
	} else if p.FormatProps != nil {
		if err := p.checkPropertyString(v); err != nil {
			return "", "invalid format - " + err.Error() + "\n"
		}
	}
	return v, ""
}

func (p *Property) checkType(raw any) (string, string) {
	failed := func(got string) string { return fmt.Sprintf("type check ('%s') failed - got '%s'", p.Type, got) }
	switch p.Type {
	case "array", "object":
		// Form encodings flatten these; the endpoints pvesim serves take none.
		s, _ := scalarString(raw)
		return s, ""
	case "boolean":
		switch t := raw.(type) {
		case bool: // only JSON bodies can carry these
			if t {
				return "1", ""
			}
			return "0", ""
		case string:
			if t == "0" || t == "1" {
				return t, ""
			}
			return "", failed(t)
		case json.Number, float64:
			s, _ := scalarString(t)
			if s == "0" || s == "1" {
				return s, ""
			}
			return "", failed(s)
		}
		return "", failed(kind(raw))
	case "integer", "number":
		s, ok := scalarString(raw)
		if !ok {
			return "", failed(kind(raw))
		}
		if _, isBool := raw.(bool); isBool {
			return "", failed(s)
		}
		if p.Type == "integer" && !integerRe.MatchString(s) {
			return "", failed(s)
		}
		if p.Type == "number" && !numberRe.MatchString(s) {
			return "", failed(s)
		}
		return s, ""
	default:
		s, ok := scalarString(raw)
		if !ok {
			return "", failed(kind(raw))
		}
		return s, ""
	}
}

// scalarString renders a scalar JSON or form value as Perl would see it.
func scalarString(raw any) (string, bool) {
	switch t := raw.(type) {
	case string:
		return t, true
	case json.Number:
		return t.String(), true
	case float64:
		if t == math.Trunc(t) && math.Abs(t) < 1e15 {
			return strconv.FormatInt(int64(t), 10), true
		}
		return strconv.FormatFloat(t, 'g', -1, 64), true
	case bool:
		if t {
			return "1", true
		}
		return "0", true
	}
	return "", false
}

func kind(raw any) string {
	switch raw.(type) {
	case []any:
		return "ARRAY"
	case map[string]any:
		return "HASH"
	case nil:
		return "undef"
	}
	return fmt.Sprintf("%T", raw)
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// checkPropertyString validates a "key=value,key2=value2" string against a
// property-string format; a value without "key=" belongs to the default key.
func (p *Property) checkPropertyString(v string) error {
	defaultKey := ""
	for k, sp := range p.FormatProps {
		if sp.DefaultKey {
			defaultKey = k
		}
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(v, ",") {
		if part == "" {
			continue
		}
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			if defaultKey == "" {
				return fmt.Errorf("value without key, but schema does not define a default key")
			}
			k, val = defaultKey, part
		}
		sp := p.FormatProps[k]
		if sp == nil {
			return fmt.Errorf("property '%s' is not defined in schema", k)
		}
		if seen[k] {
			return fmt.Errorf("duplicate key in comma-separated list property: %s", k)
		}
		seen[k] = true
		if sp.Alias != "" {
			// "virtio=MAC" sets model=virtio and macaddr=MAC.
			seen[sp.Alias] = true
			if sp.KeyAlias != "" {
				seen[sp.KeyAlias] = true
			}
			if ap := p.FormatProps[sp.Alias]; ap != nil {
				if _, msg := ap.Check(val); msg != "" {
					return fmt.Errorf("%s: %s", sp.Alias, strings.TrimSuffix(msg, "\n"))
				}
			}
			continue
		}
		if _, msg := sp.Check(val); msg != "" {
			return fmt.Errorf("%s: %s", k, strings.TrimSuffix(msg, "\n"))
		}
	}
	var missing []string
	for k, sp := range p.FormatProps {
		if !sp.Optional && sp.Alias == "" && !seen[k] {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%s: property is missing and it is not optional", missing[0])
	}
	return nil
}
