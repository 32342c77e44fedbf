package doccheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Link is a page's link to lines of a Go file: [text](file.go#L12) or
// [text](file.go#L12-L40).
type Link struct {
	File   string // the page, relative to the repository root
	Line   int    // the line of the page the link starts on, from 1
	Text   string // the link's text, lines joined by spaces
	Target string // as the page writes it, relative to the page
	From   int    // the first line linked to
	To     int    // the last one; equal to From for a single line
}

func (l Link) String() string {
	return fmt.Sprintf("%s:%d: [%s](%s)", l.File, l.Line, l.Text, l.Target)
}

// Path is the linked file relative to the repository root.
func (l Link) Path() string {
	file, _, _ := strings.Cut(l.Target, "#")
	return path.Join(path.Dir(l.File), file)
}

// codeLink is a link to a relative .go path with a line or a range; its
// text may run over a line break.
var codeLink = regexp.MustCompile(`\[([^\[\]]+)\]\(([^()\s:#]+\.go)#L(\d+)(?:-L(\d+))?\)`)

// CodeLinks returns the links of md into lines of Go files, in page
// order, leaving out fenced code blocks, where a link is text to show.
func CodeLinks(file, md string) []Link {
	text := prose(md)
	var links []Link
	for _, m := range codeLink.FindAllStringSubmatchIndex(text, -1) {
		from, _ := strconv.Atoi(text[m[6]:m[7]])
		to := from
		if m[8] >= 0 {
			to, _ = strconv.Atoi(text[m[8]:m[9]])
		}
		links = append(links, Link{
			File:   file,
			Line:   strings.Count(text[:m[0]], "\n") + 1,
			Text:   strings.Join(strings.Fields(text[m[2]:m[3]]), " "),
			Target: text[m[4] : m[1]-1],
			From:   from,
			To:     to,
		})
	}
	return links
}

// prose is md with the lines of its fenced blocks blanked, so that line
// numbers stay the page's.
func prose(md string) string {
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		m := fence.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		for i++; i < len(lines) && !closesFence(lines[i], m[2]); i++ {
			lines[i] = ""
		}
	}
	return strings.Join(lines, "\n")
}

// Decl is a declaration of a Go file, in lines from 1: a func or method,
// or a const, var or type (each spec of a parenthesised group is one of
// its own, and so is the whole group).
type Decl struct {
	Names []string // what it declares; a method is "name" and "Recv.name"
	Start int      // where a range showing it starts: its doc comment, or Line
	Line  int      // the line that declares it: func, type, const or var, or the spec's name
	End   int      // its last line: the closing } or ) of a func, type or group
}

// Source is what a link into a Go file is checked against.
type Source struct {
	Lines int // how many lines the file has
	Decls []Decl
}

// ParseSource reads the declarations of a Go file.
func ParseSource(name string, src []byte) (Source, error) {
	fset := gotoken.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.ParseComments|parser.SkipObjectResolution)
	if err != nil {
		return Source{}, err
	}
	line := func(p gotoken.Pos) int { return fset.Position(p).Line }
	s := Source{Lines: strings.Count(strings.TrimSuffix(string(src), "\n"), "\n") + 1}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			s.Decls = append(s.Decls, Decl{Names: funcNames(d), Start: docStart(d.Doc, line, line(d.Pos())),
				Line: line(d.Pos()), End: line(d.End())})
		case *ast.GenDecl:
			s.Decls = append(s.Decls, genDecls(d, line)...)
		}
	}
	return s, nil
}

// funcNames: a method answers to its own name, and to Recv.name for a
// link that says which type's method it means.
func funcNames(d *ast.FuncDecl) []string {
	if d.Recv == nil || len(d.Recv.List) == 0 {
		return []string{d.Name.Name}
	}
	t := d.Recv.List[0].Type
	if star, ok := t.(*ast.StarExpr); ok {
		t = star.X
	}
	switch g := t.(type) {
	case *ast.IndexExpr:
		t = g.X
	case *ast.IndexListExpr:
		t = g.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return []string{d.Name.Name, id.Name + "." + d.Name.Name}
	}
	return []string{d.Name.Name}
}

// genDecls: an ungrouped const, var or type is declared on its keyword's
// line; in a group each spec is declared on its own line, with its own
// doc comment, and the group is a declaration too (without names), which
// a range may show whole.
func genDecls(d *ast.GenDecl, line func(gotoken.Pos) int) []Decl {
	if d.Tok == gotoken.IMPORT {
		return nil
	}
	whole := Decl{Start: docStart(d.Doc, line, line(d.Pos())), Line: line(d.Pos()), End: line(d.End())}
	if !d.Lparen.IsValid() {
		whole.Names = specNames(d.Specs[0])
		return []Decl{whole}
	}
	decls := []Decl{whole}
	for _, sp := range d.Specs {
		decls = append(decls, Decl{Names: specNames(sp), Start: docStart(specDoc(sp), line, line(sp.Pos())),
			Line: line(sp.Pos()), End: line(sp.End())})
	}
	return decls
}

func specNames(sp ast.Spec) []string {
	switch sp := sp.(type) {
	case *ast.TypeSpec:
		return []string{sp.Name.Name}
	case *ast.ValueSpec:
		var names []string
		for _, n := range sp.Names {
			names = append(names, n.Name)
		}
		return names
	}
	return nil
}

func specDoc(sp ast.Spec) *ast.CommentGroup {
	switch sp := sp.(type) {
	case *ast.TypeSpec:
		return sp.Doc
	case *ast.ValueSpec:
		return sp.Doc
	}
	return nil
}

// docStart is the first line of doc, or decl when there is none. A
// "// LAB(name): ..." line above the doc comment is the handout's marker
// (shared/cmd/handout), not documentation: a range starts below it.
func docStart(doc *ast.CommentGroup, line func(gotoken.Pos) int, decl int) int {
	if doc == nil {
		return decl
	}
	for _, c := range doc.List {
		if !strings.HasPrefix(c.Text, "// LAB(") {
			return line(c.Pos())
		}
	}
	return decl
}

// named is a link text that names a declaration: `name`, `Recv.name` or
// `(*Recv).name`, then maybe words ("`waker` and its implementations").
var named = regexp.MustCompile("^`(?:\\(\\*?(\\w+)\\)\\.|(\\w+)\\.)?(\\w+)`(.*)$")

// Problem says what is wrong with a link into src, or "" when nothing is.
// The rule:
//
//   - the lines must be in the file;
//   - a link whose text names a declaration in backticks points at it: a
//     single line at the line that declares it (func, type, const, var);
//     a range at the whole declaration, from its doc comment to its
//     closing line, or, when words follow the name ("`waker` and its
//     implementations"), from its doc comment to the end of it or of a
//     declaration after it;
//   - any other range shows whole declarations: it starts where one
//     starts (its doc comment) and ends where one ends.
func Problem(l Link, src Source) string {
	if l.From < 1 || l.To < l.From || l.To > src.Lines {
		return fmt.Sprintf("got %s, want lines within the file's %d", lines(l.From, l.To), src.Lines)
	}
	m := named.FindStringSubmatch(l.Text)
	if m == nil || (m[2] != "" && m[3] == "go") { // `queue.go` names a file, not a method go
		return wholeProblem(l, src)
	}
	name := m[3]
	if recv := m[1] + m[2]; recv != "" {
		name = recv + "." + name
	}
	decls := declaring(src, name)
	if len(decls) == 0 {
		return fmt.Sprintf("got %s, want the declaration of %s, which the file no longer has", lines(l.From, l.To), name)
	}
	var wants []string
	for _, d := range decls {
		want, ok := namedWant(l, d, m[4] != "", src)
		if ok {
			return ""
		}
		wants = append(wants, want)
	}
	return fmt.Sprintf("got %s, want %s (%s)", lines(l.From, l.To), strings.Join(wants, " or "), name)
}

// namedWant is the lines a link to d should have, and whether it has
// them; spans says the link's text names more than d.
func namedWant(l Link, d Decl, spans bool, src Source) (string, bool) {
	switch {
	case l.From == l.To:
		return lines(d.Line, d.Line), l.From == d.Line
	case !spans:
		return lines(d.Start, d.End), l.From == d.Start && l.To == d.End
	}
	want := fmt.Sprintf("%s ending where a declaration ends", lines(d.Start, d.Start))
	return want, l.From == d.Start && l.To >= d.End && endsDecl(src, l.To)
}

// wholeProblem holds a range whose text names nothing to whole
// declarations.
func wholeProblem(l Link, src Source) string {
	if l.From == l.To {
		return ""
	}
	startsDecl := false
	for _, d := range src.Decls {
		startsDecl = startsDecl || d.Start == l.From
	}
	if startsDecl && endsDecl(src, l.To) {
		return ""
	}
	want := "a range of whole declarations"
	if d, ok := around(src, l.From); ok {
		want = fmt.Sprintf("%s, such as the declaration L%d is in, %s", want, l.From, lines(d.Start, d.End))
	}
	return fmt.Sprintf("got %s, want %s", lines(l.From, l.To), want)
}

func endsDecl(src Source, n int) bool {
	for _, d := range src.Decls {
		if d.End == n {
			return true
		}
	}
	return false
}

// around is the outermost declaration that line n is in.
func around(src Source, n int) (Decl, bool) {
	for _, d := range src.Decls {
		if d.Start <= n && n <= d.End {
			return d, true
		}
	}
	return Decl{}, false
}

func declaring(src Source, name string) []Decl {
	var out []Decl
	for _, d := range src.Decls {
		for _, n := range d.Names {
			if n == name {
				out = append(out, d)
				break
			}
		}
	}
	return out
}

// lines writes lines as a link's fragment does.
func lines(from, to int) string {
	if from == to {
		return fmt.Sprintf("#L%d", from)
	}
	return fmt.Sprintf("#L%d-L%d", from, to)
}
