package workflow

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// workflowDoc is the architecture page that describes the step table and the error codes.
const workflowDoc = "../../docs/workflow.md"

// codeConstants returns the exported Code* constants of codes.go by name, with their values,
// read from the source so that a constant added there is checked without editing this test.
func codeConstants(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, 0)
	if err != nil {
		t.Fatalf("parsing codes.go: %v", err)
	}
	codes := map[string]string{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Code") {
					continue
				}
				if i >= len(vs.Values) {
					t.Fatalf("codes.go: %s has no explicit value", name.Name)
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("codes.go: %s is not a string literal", name.Name)
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatalf("codes.go: %s: %v", name.Name, err)
				}
				codes[name.Name] = v
			}
		}
	}
	return codes
}

// TestDocsCoverStepsAndCodes keeps docs/workflow.md in step with the code: every step of Steps
// and every Code* constant (its name and its stored value) must appear in it, in backticks.
func TestDocsCoverStepsAndCodes(t *testing.T) {
	raw, err := os.ReadFile(workflowDoc)
	if err != nil {
		t.Fatalf("reading %s: %v", workflowDoc, err)
	}
	doc := string(raw)
	for _, step := range Steps {
		if !strings.Contains(doc, "`"+step+"`") {
			t.Errorf("%s does not mention step `%s`", workflowDoc, step)
		}
	}
	codes := codeConstants(t)
	// The parse must find the codes the workflow itself uses, or the check below proves nothing.
	for name, want := range map[string]string{"CodeInternal": CodeInternal, "CodeStepTimeout": CodeStepTimeout} {
		if codes[name] != want {
			t.Fatalf("codes.go parse: %s = %q, want %q", name, codes[name], want)
		}
	}
	for name, value := range codes {
		for _, s := range []string{name, value} {
			if !strings.Contains(doc, "`"+s+"`") {
				t.Errorf("%s does not mention `%s` (codes.go %s = %q)", workflowDoc, s, name, value)
			}
		}
	}
}

// TestDocsStepTable checks that docs/workflow.md carries the step table rendered from Table;
// UPDATE_DOCS=1 writes it there.
func TestDocsStepTable(t *testing.T) {
	const begin, end = "<!-- step table: begin (generated from workflow.Table) -->\n", "<!-- step table: end -->"
	raw, err := os.ReadFile(workflowDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q ... %q", workflowDoc, begin, end)
	}
	want := "\n" + StepTableMarkdown() + "\n"
	if got := doc[i+len(begin) : j]; got != want {
		if os.Getenv("UPDATE_DOCS") != "" {
			if err := os.WriteFile(workflowDoc, []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("%s's step table is not the one Table renders (run UPDATE_DOCS=1 go test -run TestDocsStepTable ./station/workflow/); want:\n%s", workflowDoc, want)
	}
}

// TestStepTable checks Table's own rules: names unique, every step has a function, a role
// only on DevID key steps, codes known.
func TestStepTable(t *testing.T) {
	known := map[string]bool{}
	for _, v := range codeConstants(t) {
		known[v] = true
	}
	seen := map[string]bool{}
	for _, d := range Table {
		if seen[d.Name] {
			t.Errorf("step %s twice", d.Name)
		}
		seen[d.Name] = true
		if d.run == nil {
			t.Errorf("step %s has no function", d.Name)
		}
		if d.Role != "" && d.Role != roleIDevID && d.Role != roleLDevID && d.Role != roleIAK {
			t.Errorf("step %s: role %q", d.Name, d.Role)
		}
		for _, c := range append(append([]string{}, d.Codes...), StepCodes...) {
			if !known[c] {
				t.Errorf("step %s: code %q is not in codes.go", d.Name, c)
			}
		}
	}
	for _, c := range FirstCheckCodes {
		if !known[c] {
			t.Errorf("first checks: code %q is not in codes.go", c)
		}
	}
	if got := nvAttributes(1 << 11); !got.WriteLocked || got.Written {
		t.Errorf("nvAttributes(TPMA_NV_WRITELOCKED) = %+v", got)
	}
	// nvWriteLocked remembers the last attributes it decoded: alternate to prove the memo
	// follows its input.
	for _, c := range []struct {
		bits uint32
		want bool
	}{{1 << 11, true}, {1 << 11, true}, {0, false}, {1<<11 | 1<<29, true}, {1 << 29, false}} {
		if got := nvWriteLocked(c.bits); got != c.want {
			t.Errorf("nvWriteLocked(%#x) = %v, want %v", c.bits, got, c.want)
		}
	}
}

// TestTimeoutClass: a step's own timeout wins, then its Wait class's, then the default.
func TestTimeoutClass(t *testing.T) {
	r := &Runner{cfg: Config{StepTimeout: time.Minute, StepTimeouts: map[string]time.Duration{
		string(WaitCA): 5 * time.Minute, StepLDevIDEnroll: 7 * time.Minute}}}
	for step, want := range map[string]time.Duration{
		StepIDevIDEnroll: 5 * time.Minute, StepLDevIDEnroll: 7 * time.Minute, StepVerify: time.Minute,
	} {
		if got := r.timeout(step); got != want {
			t.Errorf("timeout(%s) = %v, want %v", step, got, want)
		}
	}
}
