package peers_test

import (
	"context"
	"os"
	"testing"

	"reactorlab/shared/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// TestScenarios builds each peer and runs a stamp and an echo scenario
// against it, as the grader would. The whole grade (every scenario up to
// stage 4, about 15 s a peer) is a command, not a test:
//
//	go build -o /tmp/gnet ./shared/peers/cmd/gnet
//	go run ./shared/cmd/grade -stage 4 -- /tmp/gnet
func TestScenarios(t *testing.T) {
	for _, peer := range []struct {
		name string
		dir  string
		args []string
	}{
		{name: "stdlib", dir: "cmd/stdlib"},
		{name: "gnet", dir: "cmd/gnet", args: []string{"-loops", "2"}},
	} {
		t.Run(peer.name, func(t *testing.T) {
			t.Parallel()
			cmd := harness.Build(t, peer.dir).With(peer.args...)
			for _, name := range []string{"reply", "echo"} {
				s, ok := harness.Find(name)
				if !ok {
					t.Fatalf("the harness has no scenario %q", name)
				}
				r := harness.Run(context.Background(), s, cmd, harness.Options{Logf: t.Logf})
				if r.Failure != nil {
					t.Errorf("%s against %s: %v\nhint: %s\nserver output (tail):\n%s", name, peer.name, r.Failure, r.Failure.Hint, r.Output)
				}
			}
		})
	}
}
