package harness

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Outcome is what a chapter declares for a scenario.
type Outcome string

const (
	Pass  Outcome = "pass"  // the scenario must pass
	Limit Outcome = "limit" // the chapter must fail it, showing the declared kind
	Skip  Outcome = "skip"  // not meaningful for the chapter
)

// Expect is one declaration in a chapter's server_test.go.
type Expect struct {
	Outcome Outcome
	Kind    Kind   // for Limit: the kind of failure that proves the limitation
	Symptom string // for Limit: part of the failing step, naming who waits on what
	Why     string // for Limit and Skip: one sentence, for the reader
}

// Passes declares that a scenario must pass.
func Passes() Expect { return Expect{Outcome: Pass} }

// Limited declares a known limitation that must show as a failure of kind
// at a step whose description contains symptom. The kind alone would not
// do: any hang is a stall, so a server that hangs for another reason (or a
// scenario that runs out of time) would "show" every declared stall.
func Limited(kind Kind, symptom, why string) Expect {
	return Expect{Outcome: Limit, Kind: kind, Symptom: symptom, Why: why}
}

// Skipped declares a scenario that means nothing for the chapter.
func Skipped(why string) Expect { return Expect{Outcome: Skip, Why: why} }

// Expectations maps every scenario name to what the chapter declares.
type Expectations map[string]Expect

var (
	buildDir  string
	buildMu   sync.Mutex
	buildDone = map[string]string{}
)

// Main is for a chapter's TestMain: it owns the folder that Build writes
// server binaries into and removes it when the tests end.
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "reactorlab-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	buildDir = dir
	defer os.RemoveAll(dir)
	return m.Run()
}

// Build compiles the main package in dir (relative to the test's folder)
// once per test binary, with -race when the tests run with -race, and
// returns the command that starts it.
func Build(t testing.TB, dir string) Command {
	t.Helper()
	if buildDir == "" {
		t.Fatal("harness.Build needs harness.Main in TestMain")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := buildDone[abs]; ok {
		return Command{Path: bin}
	}
	bin := filepath.Join(buildDir, fmt.Sprintf("server%d", len(buildDone)))
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	// Build inside dir so its own go.mod (or the workspace) decides.
	cmd.Dir = abs
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build in %s: %v\n%s", dir, err, out)
	}
	buildDone[abs] = bin
	return Command{Path: bin}
}

// Check runs every scenario against cmd, in DESIGN.md's order, as subtests,
// and holds each to the chapter's declaration. A scenario with no
// declaration fails: adding a scenario forces every chapter to say what it
// does there. It prints one line per scenario with what it cost.
func Check(t *testing.T, cmd Command, exp Expectations) {
	t.Helper()
	for _, s := range Scenarios() {
		t.Run(s.Name, func(t *testing.T) {
			e, ok := exp[s.Name]
			if !ok {
				t.Fatalf("no expectation declared for scenario %q", s.Name)
			}
			if e.Outcome == Skip {
				t.Skip(e.Why)
			}
			r := Run(context.Background(), s, cmd, Options{Logf: t.Logf})
			report(t, s, e, r)
		})
	}
	for name := range exp {
		if _, ok := Find(name); !ok {
			t.Errorf("expectation declared for unknown scenario %q", name)
		}
	}
}

func report(t *testing.T, s Scenario, e Expect, r Result) {
	t.Helper()
	f := r.Failure
	verdict := "Passed"
	switch {
	case e.Outcome == Pass && f != nil:
		verdict = "FAILED"
		t.Errorf("scenario %s: %v\nhint: %s\nserver output (tail):\n%s", s.Name, f, f.Hint, r.Output)
	case e.Outcome == Limit && f == nil:
		verdict = "FAILED"
		t.Errorf("scenario %s passed, but the chapter declares it a limit (%s: %s).\n"+
			"If the limitation is really gone, update server_test.go and the README matrix.", s.Name, e.Kind, e.Why)
	case e.Outcome == Limit && (f.Kind != e.Kind || e.Symptom == "" || !strings.Contains(f.Step, e.Symptom)):
		verdict = "FAILED"
		t.Errorf("scenario %s failed as %s at step %q, want the declared limitation: %s at a step containing %q (%s)\n"+
			"failure: %v\nserver output (tail):\n%s", s.Name, f.Kind, f.Step, e.Kind, e.Symptom, e.Why, f, r.Output)
	case e.Outcome == Limit:
		verdict = "Limit shown (" + string(f.Kind) + ")"
		t.Logf("limitation shown: %v", f)
	}
	fmt.Printf("  ... %-22s -- %-12s %5.1fs %s\n", verdict, s.Name, r.Elapsed.Seconds(), r.Cost)
}

// CheckMatrix holds a column of the capability matrix in a README (a
// Markdown table whose first header cell is "scenario") to the chapter's
// declarations, so the README cannot drift from what the tests prove.
func CheckMatrix(t *testing.T, readme, column string, exp Expectations) {
	t.Helper()
	b, err := os.ReadFile(readme)
	if errors.Is(err, fs.ErrNotExist) {
		// A student's starter (shared/cmd/handout) is the chapter alone,
		// without the lab's README: there is no matrix to hold it to.
		t.Skipf("%s: no such file, so no matrix to check (a chapter outside the lab)", readme)
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := matrixColumn(string(b), column)
	if err != nil {
		t.Fatalf("%s: %v", readme, err)
	}
	for _, s := range Scenarios() {
		want := string(exp[s.Name].Outcome)
		if got[s.Name] != want {
			t.Errorf("%s: matrix column %q, row %q: got %q, want %q (from server_test.go)",
				readme, column, s.Name, got[s.Name], want)
		}
	}
	for name := range got {
		if _, ok := Find(name); !ok {
			t.Errorf("%s: matrix row %q is not a scenario of the harness", readme, name)
		}
	}
}

// matrixColumn returns scenario -> first word of the cell in column.
func matrixColumn(md, column string) (map[string]string, error) {
	col := -1
	out := map[string]string{}
	for _, line := range strings.Split(md, "\n") {
		cells := tableCells(line)
		if cells == nil {
			if col >= 0 && len(out) > 0 {
				break // end of the matrix table
			}
			col = -1
			continue
		}
		if cells[0] == "---" {
			continue
		}
		if col < 0 {
			if cells[0] != "scenario" {
				continue
			}
			for i, c := range cells {
				if c == column {
					col = i
				}
			}
			if col < 0 {
				return nil, fmt.Errorf("matrix has no column %q", column)
			}
			continue
		}
		if col < len(cells) {
			name := strings.Trim(cells[0], "`")
			word, _, _ := strings.Cut(cells[col], " ")
			out[name] = strings.Trim(word, "*_`")
		}
	}
	if col < 0 && len(out) == 0 {
		return nil, fmt.Errorf("no matrix table (first header cell \"scenario\") with column %q", column)
	}
	return out, nil
}

// tableCells splits a Markdown table row; separator rows and non-rows give nil.
func tableCells(line string) []string {
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "|") {
		return nil
	}
	parts := strings.Split(strings.Trim(line, "|"), "|")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	if strings.Trim(strings.Join(parts, ""), "-: ") == "" {
		return []string{"---"} // separator: still inside the table
	}
	return parts
}

// StartServer starts cmd with args for a test or benchmark that talks to
// the server itself, and stops it when the test ends.
func StartServer(tb testing.TB, cmd Command, args ...string) *Server {
	tb.Helper()
	s, err := start(context.Background(), cmd, args, nil)
	if err != nil {
		tb.Fatalf("start %s: %v", cmd, err)
	}
	tb.Cleanup(s.Stop)
	return s
}
