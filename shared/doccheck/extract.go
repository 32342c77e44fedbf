// Package doccheck holds the lab's pages to the commands they print: it
// extracts every command of every fenced sh and console block of a
// Markdown page, sorts each into one that finishes by itself (run it,
// check its exit status and the shape of its first line of output), one
// that starts a server (start it on a free port, wait for its ready line,
// run the page's next commands against it, stop it) or one that cannot run
// here (an explicit allow-list, each entry with its reason), and runs them.
//
// Its test, TestREADMECommands, does that for every README.md of the
// repository. By default it runs the fast commands only; with
// REACTORLAB_DOCS=all it runs every one it can:
//
//	REACTORLAB_DOCS=all go test -run TestREADMECommands -timeout 30m -v reactorlab/shared/doccheck
//
// TestCodeLinks holds the links of every Markdown file into lines of Go
// code to the declarations they name (Problem states the rule), so that
// a link does not drift off its code when the code moves.
package doccheck

import (
	"fmt"
	"regexp"
	"strings"
)

// Cmd is one command as a page prints it.
type Cmd struct {
	File   string   // the page, relative to the repository root
	Line   int      // the command's line in the page, from 1
	Block  int      // the fenced block it is in, from 0 in the page
	Text   string   // the command, continuation lines joined
	Output []string // console blocks: the lines the page shows after it
}

func (c Cmd) String() string { return fmt.Sprintf("%s:%d: %s", c.File, c.Line, c.Text) }

// fence opens a fenced code block: up to three spaces, three or more
// backticks or tildes, then the info string, whose first word is the
// language.
var fence = regexp.MustCompile("^( {0,3})(`{3,}|~{3,})[ \t]*([^ \t`]*)")

// Extract returns the commands of the fenced blocks of md whose language
// is a shell (sh, bash, shell: every line is a command) or a terminal
// session (console: the lines starting with "$ " are commands, the lines
// after each are its output), in page order.
func Extract(file, md string) []Cmd {
	var cmds []Cmd
	lines := strings.Split(md, "\n")
	block := -1
	for i := 0; i < len(lines); i++ {
		m := fence.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		indent, marker, lang := len(m[1]), m[2], m[3]
		end := i + 1
		for end < len(lines) && !closesFence(lines[end], marker) {
			end++
		}
		block++
		body := make([]string, 0, end-i-1)
		for _, l := range lines[i+1 : end] {
			body = append(body, unindent(l, indent))
		}
		switch lang {
		case "sh", "bash", "shell":
			cmds = append(cmds, shellCmds(file, i+2, block, body)...)
		case "console", "shell-session":
			cmds = append(cmds, consoleCmds(file, i+2, block, body)...)
		}
		i = end
	}
	return cmds
}

// closesFence reports whether line ends a block opened with marker: the
// same character, at least as many, and nothing else.
func closesFence(line, marker string) bool {
	t := strings.TrimLeft(line, " ")
	if len(line)-len(t) > 3 || !strings.HasPrefix(t, marker) {
		return false
	}
	return strings.Trim(strings.TrimRight(t, " \t"), marker[:1]) == ""
}

// unindent removes up to n leading spaces: a fence indented inside a list
// indents its content the same way.
func unindent(line string, n int) string {
	for i := 0; i < n && strings.HasPrefix(line, " "); i++ {
		line = line[1:]
	}
	return line
}

// shellCmds: every line that is not empty and not a comment is a command;
// a line ending in a backslash goes on in the next.
func shellCmds(file string, first, block int, body []string) []Cmd {
	var cmds []Cmd
	for k := 0; k < len(body); k++ {
		t := strings.TrimSpace(body[k])
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		line := first + k
		for strings.HasSuffix(t, `\`) && k+1 < len(body) {
			k++
			t = strings.TrimSuffix(t, `\`) + " " + strings.TrimSpace(body[k])
		}
		cmds = append(cmds, Cmd{File: file, Line: line, Block: block, Text: t})
	}
	return cmds
}

// consoleCmds: a line starting with "$ " is a command (a backslash at its
// end continues it on the next line), and the lines after it, up to the
// next command, are what it printed.
func consoleCmds(file string, first, block int, body []string) []Cmd {
	var cmds []Cmd
	for k := 0; k < len(body); k++ {
		l := body[k]
		if !strings.HasPrefix(l, "$ ") {
			if len(cmds) > 0 {
				last := &cmds[len(cmds)-1]
				last.Output = append(last.Output, l)
			}
			continue
		}
		line := first + k
		t := strings.TrimSpace(l[2:])
		for strings.HasSuffix(t, `\`) && k+1 < len(body) {
			k++
			t = strings.TrimSuffix(t, `\`) + " " + strings.TrimSpace(strings.TrimPrefix(body[k], "> "))
		}
		cmds = append(cmds, Cmd{File: file, Line: line, Block: block, Text: t})
	}
	for i := range cmds {
		cmds[i].Output = trimBlank(cmds[i].Output)
	}
	return cmds
}

func trimBlank(lines []string) []string {
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}
