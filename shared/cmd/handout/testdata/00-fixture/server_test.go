package main

import (
	"os"
	"testing"

	"reactorlab/shared/harness"
	"reactorlab/shared/protocol"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// TestScenarios runs reply, which needs answer; the fixture declares the
// others skipped, to stay fast.
func TestScenarios(t *testing.T) {
	exp := harness.Expectations{}
	for _, s := range harness.Scenarios() {
		exp[s.Name] = harness.Skipped("the fixture serves the reply scenario only")
	}
	exp["reply"] = harness.Passes()
	harness.Check(t, harness.Build(t, "."), exp)
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-mode", "echo", "-addr", "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.mode != protocol.Echo || cfg.addr != "127.0.0.1:0" || cfg.maxLine != protocol.DefaultMaxLine {
		t.Errorf("parseFlags = %+v, want echo on 127.0.0.1:0 with the default -max-line", cfg)
	}
}
