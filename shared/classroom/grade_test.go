// Copy this file into a student's repository, next to its go.mod, to grade
// the student's server with nothing but go test, stage by stage:
//
//	go test -run TestGrade -v ./             # every stage below
//	go test -run 'TestGrade/stage2$' ./      # one stage: one Classroom test each, with its points
//
// The repository's go.mod needs the lab's shared module, which no module
// proxy serves. A starter made by shared/cmd/handout has a copy in shared/
// and the replace already; any other repository needs a copy of the lab's
// shared/ folder beside this file and, in go.mod,
//
//	require reactorlab/shared v0.0.0
//	replace reactorlab/shared => ./shared
//
// then `go mod tidy`. shared/classroom/README.md in the lab says more.
package main_test

import (
	"fmt"
	"os"
	"testing"

	"reactorlab/shared/grading"
)

// stages are the stages this assignment grades. Each subtest runs the
// scenarios its stage adds to the one before, so their points add up;
// stage 5 adds none (a wakeup fd does not show from outside).
var stages = []int{1, 2, 3, 4}

func TestGrade(t *testing.T) {
	if _, err := os.Stat("go.mod"); err != nil {
		t.Skip("no go.mod here: copy this file into the student's repository, next to its go.mod")
	}
	// The server: this folder's Go main package, built for the test. For a
	// server in another language, build it first (make, ./build.sh) and
	// name the program instead:
	//	server := grading.Program(t, "./server")
	server := grading.Build(t, ".")
	for _, n := range stages {
		t.Run(fmt.Sprint("stage", n), func(t *testing.T) {
			grading.StageAdds(t, n, server...)
		})
	}
}
