//go:build !linux

// Chapters call Linux system calls (accept4, epoll, eventfd) by name. On
// another system, say so in one sentence instead of a page of undefined
// symbols from the compiler.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintf(os.Stderr, "reactor-lab chapters need Linux (they call epoll and friends directly), and this is %s: "+
		"run them in a Linux VM or container, e.g. docker run -it --rm -v \"$PWD\":/lab -w /lab golang:1.26 bash\n", runtime.GOOS)
	os.Exit(1)
}
