package main

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The markers, each alone on its line:
//
//	// LAB(waker): make the loop wake when another goroutine queues a task
//	...the solution...
//	// END LAB
var (
	labLine = regexp.MustCompile(`^// LAB\(([A-Za-z0-9_.-]+)\): (\S.*)$`)
	endLine = regexp.MustCompile(`^// END LAB$`)
	// marker catches a misspelt one, which must not pass silently as a
	// plain comment (and leave the solution in the starter).
	marker = regexp.MustCompile(`^//\s*(LAB\s*\(|END\s*LAB\s*$)`)
)

// task is one region: what LAB.md and the summary list.
type task struct {
	Name  string
	Task  string
	File  string
	Line  int      // the LAB line in the chapter's file
	Funcs []string // the functions whose bodies it removed; none for a region inside a body
	In    string   // for a region inside a body: the function it is in
}

// pkgInfo is what stubs need to know of the package and its imports.
type pkgInfo struct {
	// types maps the package's type names to their definitions, so that
	// a stub returns connState's zero as 0 and a struct's as T{}.
	types map[string]ast.Expr
	// importNames maps an import path to its package's name, which
	// import paths do not always end with (go-cmp/cmp, math/rand/v2).
	importNames map[string]string
}

// region is one LAB ... END LAB pair.
type region struct {
	task
	start, end int       // byte offsets: the start of the LAB line, past the END LAB line
	labPos     token.Pos // the LAB comment
	endPos     token.Pos // the END LAB comment
}

// strip replaces every region of a Go file with stubs that compile:
//
//   - Functions declared in a region keep their signature and get a body
//     with a TODO(lab) comment and the zero values of their results (an
//     error result is a non-nil "TODO(lab)" error; with no error result
//     and a result that could be nil, the stub panics instead, since a nil
//     would only fail later and further away). Their doc comment keeps its
//     first paragraph when it is inside the region (the contract) and all
//     of it when it is above the LAB line. Types, constants and variables
//     declared in a region stay whole.
//   - A region inside a function body becomes the TODO(lab) comment, plus
//     `_ = x` for each variable declared before it that only the region
//     used, plus a return when the region ended the body.
//
// Imports that only the removed code used go; "errors" comes in for the
// stubs' errors. It returns the file gofmt-ed, and its regions.
func strip(file string, src []byte, pkg pkgInfo) ([]byte, []task, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.ParseComments)
	if err != nil {
		return nil, nil, err
	}
	regions, err := findRegions(fset, f, src)
	if err != nil || len(regions) == 0 {
		return src, nil, err
	}
	type edit struct {
		start, end int
		text       string
	}
	var edits []edit
	needErrors := false
	var tasks []task
	for i := range regions {
		r := &regions[i]
		fn, err := regionFunc(fset, f, r)
		if err != nil {
			return nil, nil, err
		}
		var text string
		var usesErrors bool
		if fn == nil {
			text, usesErrors, err = stubDecls(fset, f, src, r, pkg)
		} else {
			text, usesErrors, err = stubStmts(fset, fn, src, r, pkg)
		}
		if err != nil {
			return nil, nil, err
		}
		needErrors = needErrors || usesErrors
		edits = append(edits, edit{start: r.start, end: r.end, text: text})
		tasks = append(tasks, r.task)
	}
	out := slices.Clone(src)
	for i := len(edits) - 1; i >= 0; i-- {
		e := edits[i]
		out = append(out[:e.start:e.start], append([]byte(e.text), out[e.end:]...)...)
	}
	if needErrors {
		out = addImport(out, "errors")
	}
	out, err = dropUnusedImports(file, out, pkg)
	if err != nil {
		return nil, nil, err
	}
	pretty, err := format.Source(out)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: the starter does not parse (%v):\n%s", file, err, out)
	}
	return pretty, tasks, nil
}

// findRegions pairs the markers of f, in order.
func findRegions(fset *token.FileSet, f *ast.File, src []byte) ([]region, error) {
	var regions []region
	var open *region
	for _, cg := range f.Comments {
		for _, c := range cg.List {
			if !marker.MatchString(c.Text) {
				continue
			}
			pos := fset.Position(c.Pos())
			where := fmt.Sprintf("%s:%d", pos.Filename, pos.Line)
			lineStart, lineEnd := lineBounds(src, pos.Offset)
			if strings.TrimSpace(string(src[lineStart:lineEnd])) != c.Text {
				return nil, fmt.Errorf("%s: %q must be alone on its line", where, c.Text)
			}
			switch m := labLine.FindStringSubmatch(c.Text); {
			case m != nil:
				if open != nil {
					return nil, fmt.Errorf("%s: LAB(%s) begins before LAB(%s) of line %d ends", where, m[1], open.Name, open.Line)
				}
				open = &region{
					task:   task{Name: m[1], Task: strings.TrimRight(m[2], " ."), File: pos.Filename, Line: pos.Line},
					start:  lineStart,
					labPos: c.Pos(),
				}
			case endLine.MatchString(c.Text):
				if open == nil {
					return nil, fmt.Errorf("%s: END LAB with no LAB before it", where)
				}
				open.end = min(lineEnd+1, len(src))
				open.endPos = c.Pos()
				regions = append(regions, *open)
				open = nil
			default:
				return nil, fmt.Errorf("%s: %q: a marker is `// LAB(name): task` or `// END LAB`", where, c.Text)
			}
		}
	}
	if open != nil {
		return nil, fmt.Errorf("%s:%d: LAB(%s) has no END LAB", open.File, open.Line, open.Name)
	}
	return regions, nil
}

// lineBounds returns the offsets of the start of the line holding off and
// of its newline (or the end of src).
func lineBounds(src []byte, off int) (int, int) {
	start := bytes.LastIndexByte(src[:off], '\n') + 1
	end := bytes.IndexByte(src[off:], '\n')
	if end < 0 {
		return start, len(src)
	}
	return start, off + end
}

// regionFunc returns the function whose body holds the region, nil for a
// region between declarations, and an error for one that crosses a
// function's edge or cuts into another declaration.
func regionFunc(fset *token.FileSet, f *ast.File, r *region) (*ast.FuncDecl, error) {
	var startIn, endIn ast.Decl
	for _, d := range f.Decls {
		if d.Pos() < r.labPos && r.labPos < d.End() {
			startIn = d
		}
		if d.Pos() < r.endPos && r.endPos < d.End() {
			endIn = d
		}
	}
	where := fmt.Sprintf("%s:%d: LAB(%s)", r.File, r.Line, r.Name)
	if startIn != endIn {
		return nil, fmt.Errorf("%s: the region crosses the edge of a declaration; "+
			"put both markers between declarations, or both inside one function body", where)
	}
	if startIn == nil {
		return nil, nil
	}
	fn, ok := startIn.(*ast.FuncDecl)
	if !ok || fn.Body == nil || r.labPos < fn.Body.Lbrace {
		return nil, fmt.Errorf("%s: a region inside a declaration must be inside a function body", where)
	}
	return fn, nil
}

// stubDecls is the text that replaces a region between declarations.
func stubDecls(fset *token.FileSet, f *ast.File, src []byte, r *region, pkg pkgInfo) (string, bool, error) {
	off := func(p token.Pos) int { return fset.Position(p).Offset }
	var pieces []string
	usesErrors := false
	for _, d := range f.Decls {
		if d.End() < r.labPos || d.Pos() > r.endPos {
			continue
		}
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Body == nil { // implemented in assembly: nothing to remove
				pieces = append(pieces, string(src[off(d.Pos()):off(d.End())]))
				continue
			}
			doc := ""
			if d.Doc != nil && d.Doc.Pos() >= r.labPos {
				doc = firstParagraph(d.Doc)
			}
			ret, errs := stubReturn(d.Type, r.Name, pkg)
			usesErrors = usesErrors || errs
			pieces = append(pieces, fmt.Sprintf("%s%s{\n\t// TODO(lab): %s, see README.md\n%s}",
				doc, src[off(d.Pos()):off(d.Body.Lbrace)], r.Task, indent(ret, "\t")))
			r.Funcs = append(r.Funcs, funcName(d))
		case *ast.GenDecl:
			doc := ""
			if d.Doc != nil && d.Doc.Pos() >= r.labPos {
				doc = withoutMarkers(d.Doc)
			}
			pieces = append(pieces, doc+string(src[off(d.Pos()):off(d.End())]))
		}
	}
	if len(r.Funcs) == 0 {
		return "", false, fmt.Errorf("%s:%d: LAB(%s) holds no function: mark functions, or statements inside one",
			r.File, r.Line, r.Name)
	}
	return strings.Join(pieces, "\n\n") + "\n", usesErrors, nil
}

// firstParagraph is a doc comment up to its first blank line, without
// markers: the function's contract, not how the solution meets it.
func firstParagraph(cg *ast.CommentGroup) string {
	var b strings.Builder
	for _, c := range cg.List {
		if marker.MatchString(c.Text) {
			continue
		}
		if strings.TrimSpace(c.Text) == "//" {
			break
		}
		b.WriteString(c.Text)
		b.WriteString("\n")
	}
	return b.String()
}

// withoutMarkers is a whole doc comment but for marker lines.
func withoutMarkers(cg *ast.CommentGroup) string {
	var b strings.Builder
	for _, c := range cg.List {
		if !marker.MatchString(c.Text) {
			b.WriteString(c.Text)
			b.WriteString("\n")
		}
	}
	return b.String()
}

func funcName(d *ast.FuncDecl) string {
	if d.Recv == nil || len(d.Recv.List) == 0 {
		return d.Name.Name
	}
	t := d.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if ix, ok := t.(*ast.IndexExpr); ok {
		t = ix.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + d.Name.Name
	}
	return d.Name.Name
}

// stubReturn is the statement that ends a stub: nothing for a function
// without results; the zero values, with a TODO(lab) error for an error
// result; a panic when there is no error to report through and a zero
// value could be a nil that fails later, far from here.
func stubReturn(ft *ast.FuncType, name string, pkg pkgInfo) (stmt string, usesErrors bool) {
	if ft.Results == nil || len(ft.Results.List) == 0 {
		return "", false
	}
	var vals []string
	hasError, nilable := false, false
	for _, field := range ft.Results.List {
		v, isNil := zeroValue(field.Type, pkg)
		if id, ok := field.Type.(*ast.Ident); ok && id.Name == "error" {
			hasError = true
			v = fmt.Sprintf("errors.New(%s)", strconv.Quote("TODO(lab): "+name))
		}
		nilable = nilable || isNil
		for range max(1, len(field.Names)) {
			vals = append(vals, v)
		}
	}
	if nilable && !hasError {
		return fmt.Sprintf("panic(%s)\n", strconv.Quote("TODO(lab): "+name)), false
	}
	return "return " + strings.Join(vals, ", ") + "\n", hasError
}

// zeroValue is an expression for the zero value of type t, and whether
// that is a nil that would fail where it is used (a pointer, a map, a
// channel, a function or an interface; a nil slice works as an empty one).
func zeroValue(t ast.Expr, pkg pkgInfo) (string, bool) {
	return zeroOf(t, exprString(t), pkg, 0)
}

func zeroOf(t ast.Expr, name string, pkg pkgInfo, depth int) (string, bool) {
	switch t := t.(type) {
	case *ast.ParenExpr:
		return zeroOf(t.X, name, pkg, depth)
	case *ast.StarExpr, *ast.MapType, *ast.ChanType, *ast.FuncType, *ast.InterfaceType:
		return "nil", true
	case *ast.ArrayType:
		if t.Len == nil {
			return "nil", false
		}
		return name + "{}", false
	case *ast.StructType:
		return name + "{}", false
	case *ast.Ident:
		switch t.Name {
		case "bool":
			return "false", false
		case "string":
			return `""`, false
		case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64",
			"uintptr", "byte", "rune", "float32", "float64", "complex64", "complex128":
			return "0", false
		case "error", "any":
			return "nil", true
		}
		if def, ok := pkg.types[t.Name]; ok && depth < 10 {
			v, isNil := zeroOf(def, name, pkg, depth+1)
			return v, isNil
		}
	case *ast.SelectorExpr:
		if x, ok := t.X.(*ast.Ident); ok && x.Name == "time" {
			switch t.Sel.Name {
			case "Duration", "Month", "Weekday":
				return "0", false
			case "Time":
				return "time.Time{}", false
			}
		}
	}
	// Whatever it is, this is its zero value.
	return "*new(" + name + ")", false
}

func exprString(e ast.Expr) string {
	var b bytes.Buffer
	format.Node(&b, token.NewFileSet(), e)
	return b.String()
}

func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	return prefix + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+prefix) + "\n"
}

// stubStmts is the text that replaces a region inside fn's body.
func stubStmts(fset *token.FileSet, fn *ast.FuncDecl, src []byte, r *region, pkg pkgInfo) (string, bool, error) {
	off := func(p token.Pos) int { return fset.Position(p).Offset }
	where := fmt.Sprintf("%s:%d: LAB(%s)", r.File, r.Line, r.Name)
	r.In = funcName(fn)
	endPos := r.endPos // anything from here on is after the region
	block, stmts := enclosingBlock(fn.Body, r.labPos, r.endPos)
	for _, s := range stmts {
		if (s.Pos() < r.labPos && s.End() > r.labPos) || (s.Pos() < r.endPos && s.End() > r.endPos) {
			return "", false, fmt.Errorf("%s: the region cuts a statement in two (line %d)", where, fset.Position(s.Pos()).Line)
		}
	}
	// A name the region declares and the rest of the function uses would
	// be undefined in the starter.
	for _, s := range stmts {
		if s.Pos() < r.labPos || s.End() > r.endPos {
			continue
		}
		for _, name := range declared(s) {
			if use := firstUse(fn.Body, name, endPos); use.IsValid() {
				return "", false, fmt.Errorf("%s: the region declares %s, which line %d uses after END LAB; "+
					"end the region after its last use, or mark the whole function", where, name, fset.Position(use).Line)
			}
		}
	}
	lineStart, _ := lineBounds(src, off(r.labPos))
	ind := string(src[lineStart:off(r.labPos)])
	var b strings.Builder
	fmt.Fprintf(&b, "%s// TODO(lab): %s, see README.md\n", ind, r.Task)
	for _, name := range orphans(fn.Body, r.labPos, endPos) {
		fmt.Fprintf(&b, "%s_ = %s\n", ind, name)
	}
	usesErrors := false
	// The region ended the body: the starter needs a return of its own.
	if block == fn.Body && strings.TrimSpace(string(src[r.end:off(block.(*ast.BlockStmt).Rbrace)])) == "" {
		ret, errs := stubReturn(fn.Type, r.Name, pkg)
		b.WriteString(indent(ret, ind))
		usesErrors = errs
	}
	return b.String(), usesErrors, nil
}

// enclosingBlock returns the innermost statement list holding both
// positions, and its statements.
func enclosingBlock(body *ast.BlockStmt, from, to token.Pos) (ast.Node, []ast.Stmt) {
	var node ast.Node = body
	list := body.List
	ast.Inspect(body, func(n ast.Node) bool {
		if n == nil || n.Pos() > from || n.End() < to {
			return n != nil && n.Pos() <= from && n.End() >= to
		}
		switch n := n.(type) {
		case *ast.BlockStmt:
			node, list = n, n.List
		case *ast.CaseClause:
			node, list = n, n.Body
		case *ast.CommClause:
			node, list = n, n.Body
		}
		return true
	})
	return node, list
}

// declared lists the names a statement declares in its block.
func declared(s ast.Stmt) []string {
	var names []string
	switch s := s.(type) {
	case *ast.AssignStmt:
		if s.Tok == token.DEFINE {
			for _, e := range s.Lhs {
				if id, ok := e.(*ast.Ident); ok && id.Name != "_" {
					names = append(names, id.Name)
				}
			}
		}
	case *ast.DeclStmt:
		for _, spec := range s.Decl.(*ast.GenDecl).Specs {
			switch spec := spec.(type) {
			case *ast.ValueSpec:
				for _, id := range spec.Names {
					if id.Name != "_" {
						names = append(names, id.Name)
					}
				}
			case *ast.TypeSpec:
				names = append(names, spec.Name.Name)
			}
		}
	}
	return names
}

// firstUse is the first identifier called name at or after pos.
func firstUse(body *ast.BlockStmt, name string, pos token.Pos) token.Pos {
	var found token.Pos
	ast.Inspect(body, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && id.Name == name && id.Pos() >= pos && !found.IsValid() {
			found = id.Pos()
		}
		return !found.IsValid()
	})
	return found
}

// orphans are the local variables declared before a region, in a block
// around it, that only the region used: without it they would be
// "declared and not used".
func orphans(body *ast.BlockStmt, from, to token.Pos) []string {
	type decl struct {
		id    *ast.Ident
		scope ast.Node
	}
	var decls []decl
	var stack []ast.Node
	ast.Inspect(body, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		scope := func() ast.Node {
			for i := len(stack) - 1; i >= 0; i-- {
				switch stack[i].(type) {
				case *ast.BlockStmt, *ast.CaseClause, *ast.CommClause:
					return stack[i]
				}
			}
			return body
		}
		add := func(e ast.Expr, sc ast.Node) {
			if id, ok := e.(*ast.Ident); ok && id.Name != "_" && id.Pos() < from {
				decls = append(decls, decl{id: id, scope: sc})
			}
		}
		switch n := n.(type) {
		case *ast.AssignStmt:
			if n.Tok == token.DEFINE {
				for _, e := range n.Lhs {
					add(e, scope())
				}
			}
		case *ast.ValueSpec:
			for _, id := range n.Names {
				add(id, scope())
			}
		case *ast.RangeStmt:
			if n.Tok == token.DEFINE {
				add(n.Key, n)
				add(n.Value, n)
			}
		}
		stack = append(stack, n)
		return true
	})
	var out []string
	for _, d := range decls {
		if d.scope.Pos() > from || d.scope.End() < to {
			continue // out of scope at the region
		}
		inside, outside := 0, 0
		ast.Inspect(d.scope, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok && id != d.id && id.Name == d.id.Name && id.Pos() > d.id.Pos() {
				if id.Pos() >= from && id.Pos() < to {
					inside++
				} else {
					outside++
				}
			}
			return true
		})
		if inside > 0 && outside == 0 && !slices.Contains(out, d.id.Name) {
			out = append(out, d.id.Name)
		}
	}
	return out
}

// addImport adds path to the file's imports, unless it is there.
func addImport(src []byte, importPath string) []byte {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "", src, parser.ImportsOnly)
	if err != nil {
		return src
	}
	quoted := strconv.Quote(importPath)
	for _, spec := range f.Imports {
		if spec.Path.Value == quoted {
			return src
		}
	}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.IMPORT || !gd.Lparen.IsValid() {
			continue
		}
		at := fset.Position(gd.Lparen).Offset + 1
		return slices.Concat(src[:at], []byte("\n\t"+quoted), src[at:])
	}
	at := fset.Position(f.Name.End()).Offset
	return slices.Concat(src[:at], []byte("\n\nimport "+quoted+"\n"), src[at:])
}

// dropUnusedImports removes the imports no identifier of the file refers
// to any more: the removed code was their only user.
func dropUnusedImports(file string, src []byte, pkg pkgInfo) ([]byte, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.ParseComments)
	if err != nil {
		return nil, fmt.Errorf("%s: the starter does not parse (%v):\n%s", file, err, src)
	}
	// A package name is an identifier that resolves to nothing in the
	// file: local variables and parameters have an object.
	used := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if x, ok := sel.X.(*ast.Ident); ok && x.Obj == nil {
				used[x.Name] = true
			}
		}
		return true
	})
	off := func(p token.Pos) int { return fset.Position(p).Offset }
	type cut struct{ start, end int }
	var cuts []cut
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.IMPORT {
			continue
		}
		var dead []*ast.ImportSpec
		for _, spec := range gd.Specs {
			is := spec.(*ast.ImportSpec)
			if !used[importName(is, pkg)] && (is.Name == nil || (is.Name.Name != "_" && is.Name.Name != ".")) {
				dead = append(dead, is)
			}
		}
		if len(dead) == len(gd.Specs) && len(dead) > 0 {
			start, _ := lineBounds(src, off(gd.Pos()))
			_, end := lineBounds(src, off(gd.End()))
			cuts = append(cuts, cut{start, end})
			continue
		}
		for _, is := range dead {
			start, _ := lineBounds(src, off(is.Pos()))
			_, end := lineBounds(src, off(is.End()))
			cuts = append(cuts, cut{start, end})
		}
	}
	out := slices.Clone(src)
	for i := len(cuts) - 1; i >= 0; i-- {
		c := cuts[i]
		out = append(out[:c.start:c.start], out[min(c.end+1, len(out)):]...)
	}
	return out, nil
}

// importName is the name a file uses for an import: its own name for it,
// else the package's name as go list reported it, else the last element
// of the path without a major version or a "go-" prefix.
func importName(is *ast.ImportSpec, pkg pkgInfo) string {
	if is.Name != nil {
		return is.Name.Name
	}
	p, _ := strconv.Unquote(is.Path.Value)
	if name, ok := pkg.importNames[p]; ok {
		return name
	}
	base := path.Base(p)
	if len(base) > 1 && base[0] == 'v' && strings.Trim(base[1:], "0123456789") == "" {
		base = path.Base(path.Dir(p))
	}
	base = strings.TrimPrefix(base, "go-")
	return strings.NewReplacer("-", "_", ".", "_").Replace(base)
}

// typeDefs collects the type declarations of a package's files, for
// zeroValue.
func typeDefs(files []*ast.File) map[string]ast.Expr {
	defs := map[string]ast.Expr{}
	for _, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				ts := spec.(*ast.TypeSpec)
				if ts.TypeParams == nil {
					defs[ts.Name.Name] = ts.Type
				}
			}
		}
	}
	return defs
}
