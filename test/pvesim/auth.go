package pvesim

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/pvelb/pvelb/test/pvesim/schema"
)

var tokenIDRe = regexp.MustCompile(`^[^\s:/@!]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+$`)

// authenticate checks `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`.
// Messages follow PVE::AccessControl; none of them repeats the secret.
func (s *Server) authenticate(r *http.Request) (Token, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return Token{}, fail(http.StatusUnauthorized, "No ticket")
	}
	rest, ok := strings.CutPrefix(h, "PVEAPIToken=")
	if !ok {
		if rest, ok = strings.CutPrefix(h, "PVEAPIToken "); !ok {
			return Token{}, fail(http.StatusUnauthorized, "No ticket")
		}
	}
	id, secret, ok := strings.Cut(strings.TrimSpace(rest), "=")
	if !ok || !tokenIDRe.MatchString(id) {
		return Token{}, fail(http.StatusUnauthorized, "invalid API token format")
	}
	t, known := s.tokens[id]
	if !known {
		user, name, _ := strings.Cut(id, "!")
		return Token{}, fail(http.StatusUnauthorized, "no such token '%s' for user '%s'", name, user)
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(t.Secret)) != 1 {
		return Token{}, fail(http.StatusUnauthorized, "invalid token value!")
	}
	return t, nil
}

// hasPriv reports whether the token holds priv on the ACL path. Grants
// propagate down the tree, as ACLs with propagate=1 do.
func (t Token) hasPriv(path, priv string) bool {
	if t.Privileges == nil {
		return true
	}
	for _, g := range t.Privileges {
		name, on, scoped := strings.Cut(g, "@")
		if name != priv {
			continue
		}
		if !scoped || on == "/" || path == on || strings.HasPrefix(path, strings.TrimSuffix(on, "/")+"/") {
			return true
		}
	}
	return false
}

// checkPermissions evaluates the schema's permission rule, as
// PVE::RPCEnvironment::check_api2_permissions does, with {param} in ACL
// paths replaced by the request's parameters.
func (s *Server) checkPermissions(t Token, p schema.Permissions, params map[string]string) error {
	if p.Check == nil {
		if p.User == "all" || p.User == "world" {
			return nil
		}
		// A rule the simulator cannot evaluate is granted to all-privilege
		// tokens only, so restricted tokens see a refusal, not a surprise.
		if t.Privileges == nil {
			return nil
		}
		return fail(http.StatusForbidden, "Permission check failed")
	}
	return evalCheck(t, p.Check, params)
}

func evalCheck(t Token, check []any, params map[string]string) error {
	if len(check) == 0 {
		return nil
	}
	op, _ := check[0].(string)
	switch op {
	case "perm":
		if len(check) < 3 {
			return fail(http.StatusForbidden, "Permission check failed")
		}
		path := substitute(fmt.Sprint(check[1]), params)
		var privs []string
		if list, ok := check[2].([]any); ok {
			for _, p := range list {
				privs = append(privs, fmt.Sprint(p))
			}
		}
		anyOf := false
		for i := 3; i+1 < len(check); i += 2 {
			if check[i] == "any" {
				anyOf = truthy(check[i+1])
			}
		}
		if anyOf {
			for _, p := range privs {
				if t.hasPriv(path, p) {
					return nil
				}
			}
			return fail(http.StatusForbidden, "Permission check failed (%s, %s)", path, strings.Join(privs, "|"))
		}
		for _, p := range privs {
			if !t.hasPriv(path, p) {
				return fail(http.StatusForbidden, "Permission check failed (%s, %s)", path, p)
			}
		}
		return nil
	case "and":
		for _, c := range check[1:] {
			sub, _ := c.([]any)
			if err := evalCheck(t, sub, params); err != nil {
				return err
			}
		}
		return nil
	case "or":
		var first error
		for _, c := range check[1:] {
			sub, _ := c.([]any)
			err := evalCheck(t, sub, params)
			if err == nil {
				return nil
			}
			if first == nil {
				first = err
			}
		}
		if first == nil {
			first = fail(http.StatusForbidden, "Permission check failed")
		}
		return first
	}
	if t.Privileges == nil {
		return nil
	}
	return fail(http.StatusForbidden, "Permission check failed")
}

var placeholder = regexp.MustCompile(`\{([^}]+)\}`)

func substitute(path string, params map[string]string) string {
	return placeholder.ReplaceAllStringFunc(path, func(m string) string {
		return params[m[1:len(m)-1]]
	})
}

func truthy(v any) bool {
	switch t := v.(type) {
	case float64:
		return t != 0
	case bool:
		return t
	case string:
		return t == "1"
	}
	return false
}
