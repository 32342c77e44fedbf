// Command handout turns a chapter of the lab into a student's starter:
//
//	go run ./shared/cmd/handout -chapter 05-wakeup-fd -o /tmp/lab05
//
// The chapter marks the code that is the student's work:
//
//	// LAB(waker): wake the loop when another goroutine queues a task
//	func (l *loop) queueInLoop(task func()) { ...the solution... }
//	// END LAB
//
// In the starter each function of a region keeps its signature (and the
// first paragraph of a doc comment inside the region, all of one above
// the LAB line) and its body becomes
//
//	// TODO(lab): wake the loop when another goroutine queues a task, see README.md
//
// with a zero-value return, a TODO(lab) error for an error result, or a
// panic("TODO(lab): waker") where a nil would only fail further away. A
// region may also sit inside a function body, around statements. The
// chapter's tests stay whole: `go test ./` in the starter grades the
// work, and `go test -run 'TestScenarios/NAME' ./` one scenario.
//
// The starter is a module of its own: the chapter's files, LAB.md (the
// tasks and how to grade them), and shared/, a copy of the packages of the
// lab's shared module that the chapter's tests use, which its go.mod
// replaces reactorlab/shared with. A copy rather than a replace pointing
// at this repository: the starter is pushed to a student's repository and
// graded on a machine that has no copy of the lab, and the copy also pins
// the harness the assignment was set with.
//
// handout checks that the starter compiles, tests included (go vet), and
// warns about tests that read files outside the chapter (../README.md),
// which the starter cannot have. The exit status is 0 when the starter was
// written, 1 on an error, 2 on a usage error.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const sharedModule = "reactorlab/shared"

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("handout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	chapter := fs.String("chapter", "", "the chapter's folder, e.g. 05-wakeup-fd")
	out := fs.String("o", "", "where to write the starter: a folder that does not exist yet, or is empty")
	root := fs.String("root", "", "the lab's repository (default: the folder with go.work above the current one)")
	check := fs.Bool("check", true, "check that the starter compiles, tests included (go vet)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *chapter == "" || *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: handout -chapter NAME -o DIR [-root REPO] [-check=false]")
		return 2
	}
	if *root == "" {
		r, err := findWorkspace(".")
		if err != nil {
			fmt.Fprintln(stderr, "handout:", err)
			return 2
		}
		*root = r
	}
	h, err := makeHandout(*root, *chapter, *out, *check)
	if err != nil {
		fmt.Fprintln(stderr, "handout:", err)
		return 1
	}
	h.summary(stdout, stderr)
	return 0
}

// handout is what makeHandout wrote.
type handout struct {
	chapter, out string
	tasks        []task
	shared       []string // the shared packages copied, relative to shared/
	warnings     []string
}

func makeHandout(root, chapter, out string, check bool) (h *handout, err error) {
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	src := filepath.Join(root, chapter)
	if _, err := os.Stat(filepath.Join(src, "go.mod")); err != nil {
		return nil, fmt.Errorf("%s is not a chapter: %v", src, err)
	}
	out, err = filepath.Abs(out)
	if err != nil {
		return nil, err
	}
	if err := emptyOutput(out); err != nil {
		return nil, err
	}
	// Half a starter is worse than none: on an error, remove what was
	// written (but for a starter that does not compile, kept to be read).
	keep := false
	defer func() {
		if err != nil && !keep {
			os.RemoveAll(out)
		}
	}()
	gomod, err := os.ReadFile(filepath.Join(src, "go.mod"))
	if err != nil {
		return nil, err
	}
	sharedRel, err := sharedReplace(gomod)
	if err != nil {
		return nil, fmt.Errorf("%s/go.mod: %v", chapter, err)
	}
	sharedDir := filepath.Join(src, sharedRel)
	pkgs, err := goList(src)
	if err != nil {
		return nil, err
	}
	h = &handout{chapter: chapter, out: out}

	// The chapter, its regions stubbed.
	files, err := chapterFiles(src)
	if err != nil {
		return nil, err
	}
	info, err := packageInfo(src, files, pkgs)
	if err != nil {
		return nil, err
	}
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			return nil, err
		}
		switch {
		case rel == "go.mod":
			b = sharedReplaceLine.ReplaceAll(b, []byte("${1}./shared"))
		case strings.HasSuffix(rel, "_test.go"):
			if hasMarkers(b) {
				return nil, fmt.Errorf("%s/%s has LAB markers: the tests stay whole in a starter, mark the solution only", chapter, rel)
			}
			h.warnings = append(h.warnings, outsideReads(rel, b)...)
		case strings.HasSuffix(rel, ".go") && !strings.Contains(rel, "/"):
			stubbed, tasks, err := strip(rel, b, info)
			if err != nil {
				return nil, err
			}
			b = stubbed
			h.tasks = append(h.tasks, tasks...)
		}
		if err := writeFile(filepath.Join(out, rel), b); err != nil {
			return nil, err
		}
	}
	if len(h.tasks) == 0 {
		return nil, fmt.Errorf("%s has no `// LAB(name): task` ... `// END LAB` region: nothing would be left for the student to write", chapter)
	}

	// The shared packages the chapter and its tests use, and the module's
	// go.mod and go.sum, so that the starter builds with GOWORK=off.
	for _, p := range pkgs {
		if p.module != sharedModule {
			continue
		}
		rel, err := filepath.Rel(sharedDir, p.dir)
		if err != nil {
			return nil, err
		}
		if err := copyPackage(p.dir, filepath.Join(out, "shared", rel)); err != nil {
			return nil, err
		}
		h.shared = append(h.shared, filepath.ToSlash(rel))
	}
	for _, name := range []string{"go.mod", "go.sum"} {
		if err := copyFile(filepath.Join(sharedDir, name), filepath.Join(out, "shared", name)); err != nil {
			return nil, err
		}
	}
	if err := writeFile(filepath.Join(out, "shared", "README.md"), []byte(sharedReadme(h))); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(out, "LAB.md"), []byte(labReadme(h))); err != nil {
		return nil, err
	}
	if check {
		if err := vet(out); err != nil {
			keep = true
			return nil, fmt.Errorf("the starter in %s does not compile: %v", out, err)
		}
	}
	return h, nil
}

// findWorkspace is the folder holding go.work at or above dir.
func findWorkspace(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work at or above %s: run it in the lab's repository, or give -root", dir)
		}
	}
}

// emptyOutput refuses an output folder with files in it, and one inside a
// Go workspace, whose go.work would take the starter's place.
func emptyOutput(out string) error {
	entries, err := os.ReadDir(out)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty: remove it, or name another folder", out)
	}
	if ws, err := findWorkspace(filepath.Dir(out)); err == nil {
		return fmt.Errorf("%s is inside the Go workspace of %s, whose go.work would take over the starter's go.mod: "+
			"write it outside (e.g. /tmp/lab)", out, ws)
	}
	return nil
}

// sharedReplaceLine is the chapter's replace of the shared module, on a
// line of its own or in a replace block; ${1} is all but the path.
var sharedReplaceLine = regexp.MustCompile(`(?m)^(\s*(?:replace\s+)?` + regexp.QuoteMeta(sharedModule) + `(?:\s+v\S+)?\s*=>\s*)(\S+)[ \t]*$`)

func sharedReplace(gomod []byte) (string, error) {
	m := sharedReplaceLine.FindSubmatch(gomod)
	if m == nil {
		return "", fmt.Errorf("no replace of %s: where is shared/?", sharedModule)
	}
	return string(m[2]), nil
}

// listed is one package of go list's answer.
type listed struct {
	path, name, dir, module string
}

// goList lists the chapter's package and everything it and its tests
// import, with GOWORK=off: the starter builds without the workspace, so
// the chapter must too.
func goList(dir string) ([]listed, error) {
	cmd := exec.Command("go", "list", "-e", "-deps", "-test",
		"-f", "{{.ImportPath}}\t{{.Name}}\t{{.Dir}}\t{{with .Module}}{{.Path}}{{end}}", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list in %s: %v\n%s", dir, err, stderr.Bytes())
	}
	var pkgs []listed
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		// Test variants ("p [p.test]") and test mains are the package
		// again, or generated.
		if len(f) != 4 || strings.Contains(f[0], " ") || strings.HasSuffix(f[0], ".test") {
			continue
		}
		pkgs = append(pkgs, listed{path: f[0], name: f[1], dir: f[2], module: f[3]})
	}
	return pkgs, nil
}

// packageInfo parses the chapter's own Go files for their types, and
// names every import.
func packageInfo(dir string, files []string, pkgs []listed) (pkgInfo, error) {
	info := pkgInfo{importNames: map[string]string{}}
	for _, p := range pkgs {
		info.importNames[p.path] = p.name
	}
	fset := token.NewFileSet()
	var parsed []*ast.File
	for _, rel := range files {
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") || strings.Contains(rel, "/") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, rel), nil, parser.SkipObjectResolution)
		if err != nil {
			return info, err
		}
		parsed = append(parsed, f)
	}
	info.types = typeDefs(parsed)
	return info, nil
}

// chapterFiles lists the chapter's files, relative to it: everything but
// hidden files, programs `go build` left there, and test and profile
// output.
func chapterFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil && rel != "." {
				return filepath.SkipDir // a module of its own
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasSuffix(rel, ".test") || strings.HasSuffix(rel, ".prof") || isProgram(p) {
			return nil
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	return files, err
}

// isProgram reports a compiled program (ELF), such as the binary `go
// build` leaves in a chapter's folder.
func isProgram(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	magic := make([]byte, 4)
	_, err = io.ReadFull(f, magic)
	return err == nil && string(magic) == "\x7fELF"
}

func hasMarkers(src []byte) bool {
	for _, l := range strings.Split(string(src), "\n") {
		if marker.MatchString(strings.TrimSpace(l)) {
			return true
		}
	}
	return false
}

// outsideReads warns about string literals in a test file that name a
// path above the chapter: the starter is the chapter alone, and a test
// that reads ../README.md fails there for a reason that is not the
// student's.
func outsideReads(file string, src []byte) []string {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.SkipObjectResolution)
	if err != nil {
		return nil
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		s, err := strconv.Unquote(lit.Value)
		if err == nil && (s == ".." || strings.HasPrefix(s, "../")) {
			out = append(out, fmt.Sprintf("%s:%d names %q, outside the starter: what reads it fails there",
				file, fset.Position(lit.Pos()).Line, s))
		}
		return true
	})
	return out
}

// copyPackage copies a package's files, tests and subfolders left out:
// the starter needs the package, not its own tests.
func copyPackage(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), "_test.go") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return writeFile(to, b)
}

func writeFile(p string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

// vet compiles the starter and its tests, as the student's first
// `go test ./` will.
func vet(dir string) error {
	cmd := exec.Command("go", "vet", "./")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go vet: %v\n%s", err, b)
	}
	return nil
}

func (h *handout) summary(stdout, stderr io.Writer) {
	fmt.Fprintf(stdout, "handout: %s -> %s: %d %s; shared/ holds a copy of %s\n",
		h.chapter, h.out, len(h.tasks), plural(len(h.tasks), "task"), strings.Join(h.shared, ", "))
	for _, t := range h.tasks {
		fmt.Fprintf(stdout, "  %-12s %-14s %s: %s\n", t.Name, fmt.Sprintf("%s:%d", t.File, t.Line), t.where(), t.Task)
	}
	for _, w := range h.warnings {
		fmt.Fprintln(stderr, "handout: warning:", w)
	}
	fmt.Fprintf(stdout, "grade it: cd %s && go test ./\n", h.out)
}

func (t task) where() string {
	if t.In != "" {
		return "inside " + t.In
	}
	return strings.Join(t.Funcs, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func labReadme(h *handout) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Lab: %s\n\n", h.chapter)
	fmt.Fprintf(&b, "A starter made from the lab's chapter %s. README.md explains the idea;\n"+
		"the code marked `TODO(lab)` is yours to write. The tests are the\n"+
		"chapter's own, whole: they grade your work.\n\n", h.chapter)
	b.WriteString("## Your tasks\n\n")
	b.WriteString("| task | where | what |\n|---|---|---|\n")
	for _, t := range h.tasks {
		fmt.Fprintf(&b, "| `%s` | `%s`: %s | %s |\n", t.Name, t.File, t.where(), t.Task)
	}
	b.WriteString("\n`grep -n 'TODO(lab)' *.go` finds each place.\n\n")
	b.WriteString("## Grading\n\n```sh\n")
	b.WriteString("go test ./                                # everything\n")
	b.WriteString("go test -run TestScenarios -v ./          # the scenarios, each by name\n")
	b.WriteString("go test -run 'TestScenarios/NAME$' ./     # one, by the name -v printed\n")
	b.WriteString("```\n\n")
	b.WriteString("A chapter that runs its scenarios once per model names them MODEL/SCENARIO\n" +
		"(`TestScenarios/eventfd/reply`).\n\n")
	b.WriteString("`shared/` is a copy of the lab's own test harness and protocol, which the\n" +
		"tests use; leave it as it is.\n")
	return b.String()
}

func sharedReadme(h *handout) string {
	pkgs := slices.Clone(h.shared)
	slices.Sort(pkgs)
	return "# shared/\n\nA copy of the packages of the lab's shared module that the tests of\n" +
		h.chapter + " use (" + strings.Join(pkgs, ", ") + "), made by the lab's\n" +
		"`handout` command. go.mod's replace points reactorlab/shared here, so the\n" +
		"starter builds and tests on any machine. Leave it as it is.\n"
}
