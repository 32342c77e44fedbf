package main

import "testing"

func TestReverseWords(t *testing.T) {
	if got, want := reverseWords("one  two three"), "three two one"; got != want {
		t.Errorf("reverseWords = %q, want %q", got, want)
	}
}

func TestVowels(t *testing.T) {
	if got, want := vowels("Reactor lab"), 4; got != want {
		t.Errorf("vowels = %d, want %d", got, want)
	}
}

func TestParsePort(t *testing.T) {
	if got, err := parsePort("12345"); err != nil || got != 12345 {
		t.Errorf("parsePort(12345) = %d, %v; want 12345, nil", got, err)
	}
	if _, err := parsePort("0"); err == nil {
		t.Errorf("parsePort(0): no error, want one")
	}
}

func TestTitle(t *testing.T) {
	if got, want := title("reactor lab"), "Reactor Lab"; got != want {
		t.Errorf("title = %q, want %q", got, want)
	}
}
