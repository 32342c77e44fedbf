package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// info is what strip knows of the test's package: its types, parsed from
// src, and the names of two imports whose paths do not end with them.
func info(t *testing.T, src string) pkgInfo {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "x.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	return pkgInfo{
		types: typeDefs([]*ast.File{f}),
		importNames: map[string]string{
			"github.com/google/go-cmp/cmp": "cmp",
			"golang.org/x/sys/unix":        "unix",
		},
	}
}

func TestStrip(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{
			name: "a function: the doc's first paragraph stays, the body goes, and its imports",
			src: `package p

import (
	"fmt"
	"os"
)

// LAB(hello): print a greeting
// hello prints a greeting.
//
// Use fmt.Println: it adds the newline.
func hello() {
	fmt.Println("hello")
}

// END LAB

func exit() { os.Exit(0) }
`,
			want: `package p

import (
	"os"
)

// hello prints a greeting.
func hello() {
	// TODO(lab): print a greeting, see README.md
}

func exit() { os.Exit(0) }
`,
		},
		{
			name: "a doc above the LAB line stays whole",
			src: `package p

// twice doubles n.
//
// Shift left by one.
// LAB(twice): double n
func twice(n int) int { return n << 1 }

// END LAB
`,
			want: `package p

// twice doubles n.
//
// Shift left by one.
func twice(n int) int {
	// TODO(lab): double n, see README.md
	return 0
}
`,
		},
		{
			name: "results: zero values, a TODO error, types kept",
			src: `package p

import "golang.org/x/sys/unix"

type state int

type point struct{ x, y int }

// LAB(open): open the socket

// kind is a socket's kind.
type kind uint8

// open returns a socket.
func open(k kind) (fd int, st state, p point, name string, ok bool, err error) {
	return unix.Socket(unix.AF_INET, int(k), 0)
}

// END LAB
`,
			want: `package p

import "errors"

type state int

type point struct{ x, y int }

// kind is a socket's kind.
type kind uint8

// open returns a socket.
func open(k kind) (fd int, st state, p point, name string, ok bool, err error) {
	// TODO(lab): open the socket, see README.md
	return 0, 0, point{}, "", false, errors.New("TODO(lab): open")
}
`,
		},
		{
			name: "a variable right below the LAB line stays whole, without the marker",
			src: `package p

// LAB(one): write one
// one is what write writes.
//
// A second paragraph.
var one = []byte{1}

// write writes one.
func write() []byte { return one }

// END LAB
`,
			want: `package p

// one is what write writes.
//
// A second paragraph.
var one = []byte{1}

// write writes one.
func write() []byte {
	// TODO(lab): write one, see README.md
	return nil
}
`,
		},
		{
			name: "a nil without an error to report panics; errors is imported once",
			src: `package p

import (
	"errors"
	"time"
)

type waker interface{ wake() error }

type loop struct{ w waker }

// LAB(loop): make a loop
func newLoop() *loop { return &loop{} }

func (l *loop) waker() waker { return l.w }

func (l *loop) when() (time.Time, time.Duration, []byte, [2]int) { return time.Now(), 0, nil, [2]int{} }

func (l *loop) start() (waker, error) { return nil, errors.New("x") }

// END LAB
`,
			want: `package p

import (
	"errors"
	"time"
)

type waker interface{ wake() error }

type loop struct{ w waker }

func newLoop() *loop {
	// TODO(lab): make a loop, see README.md
	panic("TODO(lab): loop")
}

func (l *loop) waker() waker {
	// TODO(lab): make a loop, see README.md
	panic("TODO(lab): loop")
}

func (l *loop) when() (time.Time, time.Duration, []byte, [2]int) {
	// TODO(lab): make a loop, see README.md
	return time.Time{}, 0, nil, [2]int{}
}

func (l *loop) start() (waker, error) {
	// TODO(lab): make a loop, see README.md
	return nil, errors.New("TODO(lab): loop")
}
`,
		},
		{
			name: "statements: a variable only the region used is kept in use",
			src: `package p

import "strings"

func count(s string) int {
	n := 0
	set := "aeiou"
	// LAB(count): count the vowels
	for _, r := range s {
		if strings.ContainsRune(set, r) {
			n++
		}
	}
	// END LAB
	return n
}
`,
			want: `package p

func count(s string) int {
	n := 0
	set := "aeiou"
	// TODO(lab): count the vowels, see README.md
	_ = set
	return n
}
`,
		},
		{
			name: "statements that end the body get the stub's return",
			src: `package p

import "strconv"

func parse(s string) (int, error) {
	s = s + ""
	// LAB(parse): parse s
	return strconv.Atoi(s)
	// END LAB
}
`,
			want: `package p

import "errors"

func parse(s string) (int, error) {
	s = s + ""
	// TODO(lab): parse s, see README.md
	return 0, errors.New("TODO(lab): parse")
}
`,
		},
		{
			name: "a package imported under another name stays while used",
			src: `package p

import (
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

var _ = cmp.Diff

// LAB(fd): close fd
func closeFD(fd int) { unix.Close(fd) }

// END LAB
`,
			want: `package p

import (
	"github.com/google/go-cmp/cmp"
)

var _ = cmp.Diff

func closeFD(fd int) {
	// TODO(lab): close fd, see README.md
}
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, tasks, err := strip("x.go", []byte(tt.src), info(t, tt.src))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("strip (-want +got):\n%s", diff)
			}
			if len(tasks) != 1 {
				t.Errorf("tasks = %+v, want one", tasks)
			}
		})
	}
}

func TestStripTasks(t *testing.T) {
	src := `package p

// LAB(a): do a
func a() {}

func b() {}

// END LAB

func c() {
	x := 1
	// LAB(c): do c
	x++
	// END LAB
}
`
	_, tasks, err := strip("x.go", []byte(src), info(t, src))
	if err != nil {
		t.Fatal(err)
	}
	want := []task{
		{Name: "a", Task: "do a", File: "x.go", Line: 3, Funcs: []string{"a", "b"}},
		{Name: "c", Task: "do c", File: "x.go", Line: 12, In: "c"},
	}
	if diff := cmp.Diff(want, tasks); diff != "" {
		t.Errorf("tasks (-want +got):\n%s", diff)
	}
}

func TestStripRefuses(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{name: "no end", want: "has no END LAB", src: `package p

// LAB(a): do a
func a() {}
`},
		{name: "end alone", want: "END LAB with no LAB", src: `package p

func a() {}

// END LAB
`},
		{name: "nested", want: "begins before LAB(a)", src: `package p

// LAB(a): do a
// LAB(b): do b
func a() {}

// END LAB
`},
		{name: "misspelt", want: "a marker is", src: `package p

// LAB(a) do a
func a() {}

// END LAB
`},
		{name: "not alone on its line", want: "alone on its line", src: `package p

func a() { // LAB(a): do a
}

// END LAB
`},
		{name: "across a function's edge", want: "crosses the edge", src: `package p

// LAB(a): do a
func a() {
	// END LAB
}
`},
		{name: "no function", want: "holds no function", src: `package p

// LAB(a): do a
const x = 1

// END LAB
`},
		{name: "a name used after the region", want: "declares y, which line 8 uses after END LAB", src: `package p

func a() int {
	// LAB(a): do a
	y := 2
	// END LAB
	_ = 0
	return y
}
`},
		{name: "inside a type", want: "must be inside a function body", src: `package p

type t struct {
	// LAB(a): do a
	x int
	// END LAB
}
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := strip("x.go", []byte(tt.src), info(t, tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("strip: error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestImportName(t *testing.T) {
	tests := map[string]string{
		`"math/rand/v2"`:                 "rand",
		`"github.com/mattn/go-isatty"`:   "isatty",
		`"reactorlab/shared/harness"`:    "harness",
		`"github.com/google/go-cmp/cmp"`: "cmp",
	}
	for path, want := range tests {
		is := &ast.ImportSpec{Path: &ast.BasicLit{Kind: token.STRING, Value: path}}
		if got := importName(is, pkgInfo{}); got != want {
			t.Errorf("importName(%s) = %q, want %q", path, got, want)
		}
	}
}
