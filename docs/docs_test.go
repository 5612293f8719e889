package docs

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/pvelb/pvelb/names"
)

// The documents under test and the code they describe; paths are relative to
// this package's directory (go test runs there).
const (
	referenceDoc = "reference.md"
	metricsDoc   = "metrics.md"
	repoRoot     = ".."
)

// sourceDirs are the trees whose non-test Go files define pvelb's names.
// test/ and hack/ hold harnesses, not the product.
var sourceDirs = []string{"names", "provider", "loadbalancer", "announcer", "cmd"}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("reading docs/%s: %v", name, err)
	}
	return string(b)
}

// section returns the lines under the heading line exactly equal to heading,
// up to the next heading of the same or a higher level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	level := strings.IndexFunc(heading, func(r rune) bool { return r != '#' })
	lines := strings.Split(doc, "\n")
	start := slices.Index(lines, heading)
	if start < 0 {
		t.Fatalf("docs: heading %q not found", heading)
	}
	var out []string
	for _, l := range lines[start+1:] {
		if strings.HasPrefix(l, "#") {
			n := strings.IndexFunc(l, func(r rune) bool { return r != '#' })
			if n > 0 && n <= level && strings.HasPrefix(l[n:], " ") {
				break
			}
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// row is one Markdown table row split into trimmed cells.
type row []string

// tableRows returns the body rows of every table in text (header and
// separator rows dropped).
func tableRows(text string) []row {
	var rows []row
	prevTable := false
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "|") {
			prevTable = false
			continue
		}
		cells := splitCells(l)
		isSep := len(cells) > 0 && strings.Trim(strings.Join(cells, ""), "-: ") == ""
		switch {
		case !prevTable: // header
		case isSep:
		default:
			rows = append(rows, cells)
		}
		prevTable = true
	}
	return rows
}

// splitCells splits a table row on "|" outside backticks (so `a|b` in code
// stays one cell).
func splitCells(l string) []string {
	var cells []string
	var cur strings.Builder
	inCode := false
	for _, r := range strings.Trim(l, "|") {
		switch {
		case r == '`':
			inCode = !inCode
			cur.WriteRune(r)
		case r == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// codeSpans returns the backticked strings of a cell.
func codeSpans(cell string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// compare reports names in code but not documented, and (when reverse)
// documented names gone from the code.
func compare(t *testing.T, what string, code, documented map[string]bool, reverse bool) {
	t.Helper()
	if len(code) == 0 {
		t.Fatalf("%s: found none in the code; the test's extraction is broken", what)
	}
	for _, n := range sortedKeys(code) {
		if !documented[n] {
			t.Errorf("%s %q exists in the code but is not documented", what, n)
		}
	}
	if reverse {
		for _, n := range sortedKeys(documented) {
			if !code[n] {
				t.Errorf("%s %q is documented but no longer exists in the code", what, n)
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---- flags ----

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries returns a directory holding pvelb-ccm, pvelb-announcer and
// pvelbctl: PVELB_BIN_DIR when it has all three (make test), else a fresh
// build into a temporary directory.
func binaries(t *testing.T) string {
	t.Helper()
	names := []string{"pvelb-ccm", "pvelb-announcer", "pvelbctl"}
	buildOnce.Do(func() {
		if d := os.Getenv("PVELB_BIN_DIR"); d != "" {
			all := true
			for _, n := range names {
				if _, err := os.Stat(filepath.Join(d, n)); err != nil {
					all = false
				}
			}
			if all {
				binDir = d
				return
			}
		}
		d, err := os.MkdirTemp("", "pvelb-docs-bin-")
		if err != nil {
			buildErr = err
			return
		}
		args := []string{"build", "-o", d + string(filepath.Separator)}
		for _, n := range names {
			args = append(args, "./cmd/"+n)
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binDir = d
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if strings.Contains(binDir, "pvelb-docs-bin-") {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// helpFlag is one flag of a --help output.
type helpFlag struct {
	name string
	// def is pflag's "(default X)" with quotes removed, "" when none.
	def string
}

var (
	flagLine   = regexp.MustCompile(`^\s+(?:-[a-zA-Z], )?--([a-zA-Z0-9_-]+)`)
	defaultRE  = regexp.MustCompile(`\(default ([^()]*(?:\([^()]*\)[^()]*)*)\)`)
	sectionHdr = regexp.MustCompile(`^\S.*:$`)
)

// parseHelp reads the flags of a pflag/cobra --help output. A flag's text
// runs until the next flag line or section header, so wrapped descriptions
// (pvelb-announcer prints them on separate lines) keep their default.
func parseHelp(out string) map[string]helpFlag {
	flags := map[string]helpFlag{}
	var cur string
	var text strings.Builder
	flush := func() {
		if cur == "" {
			return
		}
		f := helpFlag{name: cur}
		joined := strings.Join(strings.Fields(text.String()), " ")
		if ms := defaultRE.FindAllStringSubmatch(joined, -1); ms != nil {
			f.def = strings.Trim(ms[len(ms)-1][1], `"`)
		}
		flags[cur] = f
		cur = ""
		text.Reset()
	}
	for _, l := range strings.Split(out, "\n") {
		if m := flagLine.FindStringSubmatch(l); m != nil {
			flush()
			cur = m[1]
			text.WriteString(l[len(m[0]):])
			continue
		}
		if sectionHdr.MatchString(l) {
			flush()
			continue
		}
		text.WriteString(" " + l)
	}
	flush()
	return flags
}

func runHelp(t *testing.T, bin string, args ...string) map[string]helpFlag {
	t.Helper()
	cmd := exec.Command(filepath.Join(binaries(t), bin), append(args, "--help")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s --help: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	flags := parseHelp(string(out))
	if len(flags) == 0 {
		t.Fatalf("%s %s --help printed no flags:\n%s", bin, strings.Join(args, " "), out)
	}
	return flags
}

var docFlagName = regexp.MustCompile(`^--([a-zA-Z0-9_-]+)$`)

// docFlags reads a flag table: | flag | default | meaning |. A default cell
// that is exactly one code span is compared with the binary's default; prose
// (environment-dependent defaults) is not.
func docFlags(t *testing.T, text string) map[string]row {
	t.Helper()
	out := map[string]row{}
	for _, r := range tableRows(text) {
		for _, s := range codeSpans(r[0]) {
			if m := docFlagName.FindStringSubmatch(s); m != nil {
				if _, dup := out[m[1]]; dup {
					t.Errorf("flag --%s documented twice", m[1])
				}
				out[m[1]] = r
			}
		}
	}
	return out
}

// checkDefault compares a documented default with the binary's.
func checkDefault(t *testing.T, cmd string, f helpFlag, r row) {
	t.Helper()
	if len(r) < 2 {
		t.Errorf("%s --%s: table row has no default column", cmd, f.name)
		return
	}
	cell := r[1]
	spans := codeSpans(cell)
	if len(spans) != 1 || "`"+spans[0]+"`" != cell {
		return // prose, e.g. "$NODE_NAME"
	}
	if spans[0] != f.def {
		t.Errorf("%s --%s: documented default %q, the binary's is %q", cmd, f.name, spans[0], f.def)
	}
}

func TestFlagsDocumented(t *testing.T) {
	doc := readDoc(t, referenceDoc)

	t.Run("pvelb-announcer", func(t *testing.T) {
		code := runHelp(t, "pvelb-announcer")
		documented := docFlags(t, section(t, doc, "## pvelb-announcer flags"))
		compare(t, "pvelb-announcer flag", setOf(code), setOf(documented), true)
		for n, f := range code {
			if r, ok := documented[n]; ok {
				checkDefault(t, "pvelb-announcer", f, r)
			}
		}
	})

	for _, sub := range []string{"lab", "doctor", "status", "import"} {
		t.Run("pvelbctl "+sub, func(t *testing.T) {
			code := runHelp(t, "pvelbctl", sub)
			documented := docFlags(t, section(t, doc, "### pvelbctl "+sub))
			compare(t, "pvelbctl "+sub+" flag", setOf(code), setOf(documented), true)
			for n, f := range code {
				if r, ok := documented[n]; ok {
					checkDefault(t, "pvelbctl "+sub, f, r)
				}
			}
		})
	}

	// pvelb-ccm is the upstream cloud-controller-manager command (about a
	// hundred generic flags, linked upstream). pvelb defines no flag of its
	// own there but changes defaults; those must be documented, and every
	// documented flag must exist with the documented default.
	t.Run("pvelb-ccm", func(t *testing.T) {
		code := runHelp(t, "pvelb-ccm")
		documented := docFlags(t, section(t, doc, "## pvelb-ccm flags"))
		if len(documented) == 0 {
			t.Fatal("no pvelb-ccm flag documented")
		}
		for n, r := range documented {
			f, ok := code[n]
			if !ok {
				t.Errorf("pvelb-ccm flag --%s is documented but the binary has no such flag", n)
				continue
			}
			checkDefault(t, "pvelb-ccm", f, r)
		}
		for n, f := range code {
			if strings.Contains(f.def, "proxmox") || strings.Contains(f.def, "pvelb") {
				if _, ok := documented[n]; !ok {
					t.Errorf("pvelb-ccm flag --%s has a pvelb-specific default %q but is not documented", n, f.def)
				}
			}
		}
		for _, n := range []string{"cloud-provider", "cloud-config", "leader-elect-resource-name"} {
			if _, ok := code[n]; !ok {
				t.Errorf("pvelb-ccm --help lacks --%s", n)
			}
		}
	})
}

func setOf[V any](m map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// ---- Go source ----

// parseSources parses the non-test Go files under the source dirs.
func parseSources(t *testing.T) map[string]*ast.File {
	t.Helper()
	files := map[string]*ast.File{}
	fset := token.NewFileSet()
	for _, dir := range sourceDirs {
		err := filepath.WalkDir(filepath.Join(repoRoot, dir), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(repoRoot, p)
			files[filepath.ToSlash(rel)] = f
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}

// stringConsts returns the string constants of the files whose path starts
// with prefix, by name (name -> value).
func stringConsts(files map[string]*ast.File, prefix string) map[string]string {
	out := map[string]string{}
	for p, f := range files {
		if !strings.HasPrefix(p, prefix) {
			continue
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if v, ok := stringLit(vs.Values[i]); ok {
							out[n.Name] = v
						}
					}
				}
			}
		}
	}
	return out
}

// ---- cloud config ----

// cloudConfigKeys walks provider/config's raw* types (the file's shape, with
// json tags) from rawConfig and returns every leaf key path, e.g.
// "clusters[].tokenID", "firewall.nics".
func cloudConfigKeys(t *testing.T, files map[string]*ast.File) map[string]bool {
	t.Helper()
	structs := map[string]*ast.StructType{}
	for p, f := range files {
		if !strings.HasPrefix(p, "provider/config/") {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok {
				if st, ok := ts.Type.(*ast.StructType); ok {
					structs[ts.Name.Name] = st
				}
			}
			return true
		})
	}
	root, ok := structs["rawConfig"]
	if !ok {
		t.Fatal("provider/config: type rawConfig not found; update the docs test to the new shape of the cloud config types")
	}
	keys := map[string]bool{}
	var walk func(prefix string, st *ast.StructType)
	walk = func(prefix string, st *ast.StructType) {
		for _, fld := range st.Fields.List {
			if fld.Tag == nil {
				continue
			}
			tag, _ := strconv.Unquote(fld.Tag.Value)
			name := strings.Split(reflectTag(tag, "json"), ",")[0]
			if name == "" || name == "-" {
				continue
			}
			typ, suffix := fld.Type, ""
			for {
				switch x := typ.(type) {
				case *ast.StarExpr:
					typ = x.X
					continue
				case *ast.ArrayType:
					typ, suffix = x.Elt, suffix+"[]"
					continue
				}
				break
			}
			if id, ok := typ.(*ast.Ident); ok {
				if sub, ok := structs[id.Name]; ok {
					walk(prefix+name+suffix+".", sub)
					continue
				}
			}
			keys[prefix+name] = true
		}
	}
	walk("", root)
	return keys
}

func reflectTag(tag, key string) string {
	for tag != "" {
		i := strings.Index(tag, ":")
		if i < 0 {
			return ""
		}
		k := strings.TrimSpace(tag[:i])
		tag = tag[i+1:]
		v, err := strconv.QuotedPrefix(tag)
		if err != nil {
			return ""
		}
		tag = tag[len(v):]
		if k == key {
			s, _ := strconv.Unquote(v)
			return s
		}
	}
	return ""
}

// docKeys returns the first-column code spans of every table row in text.
func docKeys(text string, keep func(string) bool) map[string]bool {
	out := map[string]bool{}
	for _, r := range tableRows(text) {
		for _, s := range codeSpans(r[0]) {
			if keep == nil || keep(s) {
				out[s] = true
			}
		}
	}
	return out
}

func TestCloudConfigKeysDocumented(t *testing.T) {
	doc := readDoc(t, referenceDoc)
	code := cloudConfigKeys(t, parseSources(t))
	documented := docKeys(section(t, doc, "## Cloud config"), nil)
	compare(t, "cloud-config key", code, documented, true)
}

// ---- CRDs ----

type schemaNode struct {
	Type        string                `json:"type"`
	Properties  map[string]schemaNode `json:"properties"`
	Items       *schemaNode           `json:"items"`
	Default     any                   `json:"default"`
	Description string                `json:"description"`
}

type crd struct {
	Spec struct {
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Versions []struct {
			Name   string `json:"name"`
			Schema struct {
				OpenAPIV3Schema schemaNode `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// opaque reports Kubernetes' own types, documented upstream: label
// selectors and metav1.Condition.
func opaque(n schemaNode) bool {
	_, me := n.Properties["matchExpressions"]
	_, ml := n.Properties["matchLabels"]
	_, ltt := n.Properties["lastTransitionTime"]
	_, reason := n.Properties["reason"]
	return (me && ml) || (ltt && reason)
}

// crdFields walks a CRD's schema: path ("spec.announce.mode") -> node.
// Arrays are transparent (their items' fields continue the path).
func crdFields(root schemaNode) map[string]schemaNode {
	out := map[string]schemaNode{}
	var walk func(prefix string, n schemaNode)
	walk = func(prefix string, n schemaNode) {
		for name, c := range n.Properties {
			if prefix == "" && (name == "apiVersion" || name == "kind" || name == "metadata") {
				continue
			}
			p := prefix + name
			if prefix != "" || (name != "spec" && name != "status") {
				out[p] = c
			}
			inner := c
			if c.Items != nil {
				inner = *c.Items
			}
			if !opaque(inner) && !opaque(c) {
				walk(p+".", inner)
			}
		}
	}
	walk("", root)
	return out
}

func TestCRDFieldsDocumented(t *testing.T) {
	doc := readDoc(t, referenceDoc)
	paths, err := filepath.Glob(filepath.Join(repoRoot, "manifests", "crds", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no CRDs in manifests/crds (%v)", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var c crd
		if err := yaml.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		kind := c.Spec.Names.Kind
		t.Run(kind, func(t *testing.T) {
			text := section(t, doc, "### "+kind+" fields")
			rows := map[string]row{}
			for _, r := range tableRows(text) {
				for _, s := range codeSpans(r[0]) {
					rows[s] = r
				}
			}
			for _, v := range c.Spec.Versions {
				fields := crdFields(v.Schema.OpenAPIV3Schema)
				compare(t, kind+" "+v.Name+" field", setOf(fields), setOf(rows), true)
				// Scalar defaults from the schema must appear in the row.
				for path, n := range fields {
					r, ok := rows[path]
					if !ok || n.Default == nil {
						continue
					}
					if _, isMap := n.Default.(map[string]any); isMap {
						continue
					}
					want := fmt.Sprint(n.Default)
					if !strings.Contains(strings.Join(r[1:], " "), "`"+want+"`") {
						t.Errorf("%s field %s: the schema's default %q is not in its row as `%s`", kind, path, want, want)
					}
				}
			}
		})
	}
}

// ---- annotations, labels, class ----

// pvelbNames returns, by file, every "pvelb.io/..." string literal in the
// product's code except API versions ("pvelb.io/v1alpha1").
func pvelbNames(files map[string]*ast.File) map[string][]string {
	out := map[string][]string{}
	apiVersion := regexp.MustCompile(`^pvelb\.io/v\d+((alpha|beta)\d+)?$`)
	for p, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			if s, ok := stringLit(asExpr(n)); ok && strings.HasPrefix(s, "pvelb.io/") && !apiVersion.MatchString(s) {
				out[p] = append(out[p], s)
			}
			return true
		})
	}
	return out
}

func asExpr(n ast.Node) ast.Expr {
	e, _ := n.(ast.Expr)
	return e
}

// TestAliasesDocumented checks the reference lists exactly the MetalLB and
// Cilium annotations pvelb reads (names.Aliases), in the order read.
func TestAliasesDocumented(t *testing.T) {
	doc := readDoc(t, referenceDoc)
	documented := map[string][]string{}
	for _, r := range tableRows(section(t, doc, "### MetalLB and Cilium annotations")) {
		if len(r) >= 2 {
			documented[strings.Trim(r[0], "`")] = codeSpans(r[1])
		}
	}
	for own, aliases := range names.Aliases {
		if got, ok := documented[own]; !ok || !slices.Equal(got, aliases) {
			t.Errorf("%s: the reference lists aliases %v, names.Aliases %v", own, got, aliases)
		}
	}
	for own := range documented {
		if _, ok := names.Aliases[own]; !ok {
			t.Errorf("the reference lists aliases of %s, which names.Aliases does not hold", own)
		}
	}
}

// TestAnnotationsDocumented checks the reference's table lists exactly the
// names registry, each with its kind, object and writer, and that no
// pvelb.io/ name is spelt anywhere but in package names.
func TestAnnotationsDocumented(t *testing.T) {
	doc := readDoc(t, referenceDoc)
	rows := map[string]row{}
	for _, r := range tableRows(section(t, doc, "## Annotations, labels and class")) {
		if len(r) >= 4 {
			rows[strings.Trim(r[0], "`")] = r
		}
	}
	registered := map[string]bool{}
	for _, e := range names.Registry {
		registered[e.Name] = true
		r, ok := rows[e.Name]
		if !ok {
			t.Errorf("%s (names.Registry) has no row in the reference's table", e.Name)
			continue
		}
		if got := []string{r[1], r[2], r[3]}; !slices.Equal(got, []string{string(e.Kind), e.On, e.SetBy}) {
			t.Errorf("%s: the reference says kind/on/set by %v, names.Registry %v/%v/%v", e.Name, got, e.Kind, e.On, e.SetBy)
		}
	}
	for n := range rows {
		if !registered[n] {
			t.Errorf("the reference documents %s, which names.Registry does not hold", n)
		}
	}
	byFile := pvelbNames(parseSources(t))
	if len(byFile["names/names.go"]) == 0 {
		t.Fatal("names/names.go: no pvelb.io/ name found; the test's extraction is broken")
	}
	for p, lits := range byFile {
		if !strings.HasPrefix(p, "names/") {
			t.Errorf("%s spells %v: use the constants of package names", p, lits)
		}
		for _, l := range lits {
			if !registered[l] {
				t.Errorf("%s: %s is not in names.Registry (so not in the reference)", p, l)
			}
		}
	}
}

// ---- Event reasons ----

// eventReasons returns the reasons pvelb gives Events: constants named
// Event*, string literals passed as the reason of an Eventf/event call, the
// literals returned by loadbalancer's eventReason, and the allocator's
// reasons that eventReason passes through unchanged.
func eventReasons(t *testing.T, files map[string]*ast.File) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for p, f := range files {
		if strings.HasPrefix(p, "cmd/") {
			continue // pvelbctl reads Events, it emits none
		}
		for name, v := range stringConsts(map[string]*ast.File{p: f}, "") {
			if strings.HasPrefix(name, "Event") && v != "" {
				out[v] = true
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || len(call.Args) < 3 {
				return true
			}
			switch sel.Sel.Name {
			case "Event", "Eventf", "AnnotatedEventf", "event":
				if s, ok := stringLit(call.Args[2]); ok {
					out[s] = true
				}
			}
			return true
		})
	}

	allocReasons := map[string]string{} // const name -> value
	for p, f := range files {
		if !strings.HasPrefix(p, "loadbalancer/allocator/") {
			continue
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Reason" {
					continue
				}
				for i, n := range vs.Names {
					if v, ok := stringLit(vs.Values[i]); ok {
						allocReasons[n.Name] = v
					}
				}
			}
		}
	}
	if len(allocReasons) == 0 {
		t.Fatal("loadbalancer/allocator: no Reason constants found; update the docs test")
	}

	var fn *ast.FuncDecl
	for p, f := range files {
		if !strings.HasPrefix(p, "loadbalancer/") || strings.Count(p, "/") != 1 {
			continue
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "eventReason" {
				fn = fd
			}
		}
	}
	if fn == nil {
		t.Fatal("loadbalancer: func eventReason not found; update the docs test to how allocator reasons become Event reasons")
	}
	mapped := map[string]bool{} // allocator reasons eventReason renames
	ast.Inspect(fn, func(n ast.Node) bool {
		cc, ok := n.(*ast.CaseClause)
		if !ok {
			return true
		}
		for _, st := range cc.Body {
			ret, ok := st.(*ast.ReturnStmt)
			if !ok || len(ret.Results) != 1 {
				continue
			}
			if s, ok := stringLit(ret.Results[0]); ok {
				out[s] = true
				for _, e := range cc.List {
					if sel, ok := e.(*ast.SelectorExpr); ok {
						mapped[sel.Sel.Name] = true
					}
				}
			}
		}
		return true
	})
	for name, v := range allocReasons {
		if !mapped[name] {
			out[v] = true
		}
	}
	return out
}

func TestEventReasonsDocumented(t *testing.T) {
	doc := readDoc(t, referenceDoc)
	code := eventReasons(t, parseSources(t))
	documented := docKeys(section(t, doc, "### Events pvelb emits"), nil)
	compare(t, "Event reason", code, documented, true)
}

// TestAnnounceCodesDocumented: the announcer's reason codes (why no node may
// announce an address) appear in NotAnnounced Events and as the reason label
// of pvelb_announcer_unannounced_ips.
func TestAnnounceCodesDocumented(t *testing.T) {
	doc := readDoc(t, referenceDoc)
	code := map[string]bool{}
	for name, v := range stringConsts(parseSources(t), "announcer/") {
		if strings.HasPrefix(name, "Reason") {
			code[v] = true
		}
	}
	documented := docKeys(section(t, doc, "### Why no node announces an address"), nil)
	compare(t, "announcer reason code", code, documented, true)
}

// ---- metrics ----

type metric struct {
	name   string
	kind   string // counter, gauge, histogram; "" for collector descriptors
	labels []string
}

// metricsInCode finds prometheus.NewCounter/Gauge/Histogram(Vec) calls and
// prometheus.NewDesc, reading the name from Namespace/Subsystem/Name and the
// labels from the []string literal.
func metricsInCode(t *testing.T, files map[string]*ast.File) map[string]metric {
	t.Helper()
	out := map[string]metric{}
	for p, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "prometheus" {
				return true
			}
			var m metric
			var labelArg ast.Expr
			switch fn := sel.Sel.Name; fn {
			case "NewCounter", "NewCounterVec", "NewGauge", "NewGaugeVec", "NewHistogram", "NewHistogramVec", "NewSummary", "NewSummaryVec":
				m.kind = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(fn, "New"), "Vec"))
				if len(call.Args) == 0 {
					return true
				}
				opts, ok := call.Args[0].(*ast.CompositeLit)
				if !ok {
					t.Errorf("%s: %s with options that are not a literal; the docs test cannot read its name", p, fn)
					return true
				}
				var parts []string
				for _, key := range []string{"Namespace", "Subsystem", "Name"} {
					for _, e := range opts.Elts {
						kv, ok := e.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						if k, _ := kv.Key.(*ast.Ident); k != nil && k.Name == key {
							if s, ok := stringLit(kv.Value); ok && s != "" {
								parts = append(parts, s)
							}
						}
					}
				}
				m.name = strings.Join(parts, "_")
				if len(call.Args) > 1 {
					labelArg = call.Args[1]
				}
			case "NewDesc":
				if len(call.Args) < 3 {
					return true
				}
				m.name, _ = stringLit(call.Args[0])
				labelArg = call.Args[2]
			default:
				return true
			}
			if cl, ok := labelArg.(*ast.CompositeLit); ok {
				for _, e := range cl.Elts {
					if s, ok := stringLit(e); ok {
						m.labels = append(m.labels, s)
					}
				}
			}
			sort.Strings(m.labels)
			if strings.HasPrefix(m.name, "pvelb_") {
				if prev, dup := out[m.name]; dup && !slices.Equal(prev.labels, m.labels) {
					t.Errorf("metric %s defined twice with different labels", m.name)
				}
				out[m.name] = m
			}
			return true
		})
	}
	return out
}

func TestMetricsDocumented(t *testing.T) {
	doc := readDoc(t, metricsDoc)
	code := metricsInCode(t, parseSources(t))
	rows := map[string]row{}
	for _, r := range tableRows(doc) {
		for _, s := range codeSpans(r[0]) {
			if strings.HasPrefix(s, "pvelb_") {
				if _, dup := rows[s]; dup {
					t.Errorf("metric %s documented twice", s)
				}
				rows[s] = r
			}
		}
	}
	compare(t, "metric", setOf(code), setOf(rows), true)
	for name, m := range code {
		r, ok := rows[name]
		if !ok {
			continue
		}
		if len(r) < 4 {
			t.Errorf("metric %s: row needs | name | type | labels | meaning |", name)
			continue
		}
		if m.kind != "" && !strings.EqualFold(strings.Trim(r[1], "` "), m.kind) {
			t.Errorf("metric %s: documented type %q, the code makes a %s", name, r[1], m.kind)
		}
		labels := codeSpans(r[2])
		sort.Strings(labels)
		if !slices.Equal(labels, m.labels) {
			t.Errorf("metric %s: documented labels %v, the code's are %v", name, labels, m.labels)
		}
	}
}

// TestDocLinks checks that relative links in docs/*.md point at files that
// exist, so a renamed document does not leave dead links behind.
func TestDocLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	names, err := filepath.Glob("*.md")
	if err != nil || len(names) == 0 {
		t.Fatalf("no docs/*.md (%v)", err)
	}
	for _, name := range names {
		doc := readDoc(t, name)
		for _, m := range link.FindAllStringSubmatch(doc, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(name), target)); errors.Is(err, os.ErrNotExist) {
				t.Errorf("docs/%s links to %s, which does not exist", name, target)
			}
		}
	}
}

// TestComparisonFiguresMeasured: every duration comparison.md quotes next
// to a link to the benchmark docs must appear in those docs, so a re-run
// benchmark with new figures cannot leave stale numbers in the comparison.
func TestComparisonFiguresMeasured(t *testing.T) {
	doc := readDoc(t, "comparison.md")
	benchFiles, err := filepath.Glob("benchmarks*.md")
	if err != nil || len(benchFiles) == 0 {
		t.Fatalf("no docs/benchmarks*.md (%v)", err)
	}
	var bench strings.Builder
	for _, f := range benchFiles {
		bench.WriteString(readDoc(t, f))
	}
	figure := regexp.MustCompile(`(\d+(?:\.\d+)?) ?(ms|s)\b`)
	var blocks []string
	for _, para := range strings.Split(doc, "\n\n") {
		if strings.HasPrefix(strings.TrimSpace(para), "|") {
			blocks = append(blocks, strings.Split(para, "\n")...)
			continue
		}
		blocks = append(blocks, regexp.MustCompile(`\n- `).Split(para, -1)...)
	}
	checked := 0
	for _, b := range blocks {
		if !strings.Contains(b, "](benchmarks") {
			continue
		}
		for _, m := range figure.FindAllStringSubmatch(b, -1) {
			checked++
			if !regexp.MustCompile(`(^|[^\d.])` + regexp.QuoteMeta(m[1]) + `($|[^\d])`).MatchString(bench.String()) {
				t.Errorf("comparison.md quotes %q next to a benchmark link, but no docs/benchmarks*.md has %s", m[0], m[1])
			}
		}
	}
	if checked == 0 {
		t.Fatal("comparison.md quotes no benchmark figure; the test found nothing to check")
	}
}
