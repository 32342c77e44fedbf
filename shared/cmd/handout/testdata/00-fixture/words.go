package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// LAB(reverse): reverse the order of a line's words
// reverseWords returns line with its words in reverse order, one space
// between each.
//
// strings.Fields splits on any run of blanks, then reverse in place.
func reverseWords(line string) string {
	words := strings.Fields(line)
	slices.Reverse(words)
	return strings.Join(words, " ")
}

// END LAB

// vowels counts the vowels of s.
func vowels(s string) int {
	n := 0
	vowelSet := "aeiouAEIOU"
	// LAB(vowels): count the vowels of s into n
	for _, r := range s {
		if strings.ContainsRune(vowelSet, r) {
			n++
		}
	}
	// END LAB
	return n
}

// LAB(port): parse a TCP port number

// minPort and maxPort bound what parsePort accepts.
const minPort, maxPort = 1, 65535

// parsePort parses a decimal TCP port.
func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < minPort || p > maxPort {
		return 0, fmt.Errorf("port %q: want %d to %d", s, minPort, maxPort)
	}
	return p, nil
}

// END LAB

// title upper-cases the first letter of each word: not part of any task,
// so its test passes in the starter too.
func title(s string) string {
	r := []rune(s)
	for i := range r {
		if i == 0 || r[i-1] == ' ' {
			r[i] = unicode.ToUpper(r[i])
		}
	}
	return string(r)
}
