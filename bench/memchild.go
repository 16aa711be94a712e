//go:build memchild

package main

import (
	"fmt"
	"os"
)

// This is the program the memory check (memcheck.go) measures: the bench
// built with -tags memchild holds the harness and kbatch's bounded
// scenario only, not the other clients, the embedded broker or the report
// code of the full suite, so that its peak RSS is that of a consumer
// process rather than of this whole program. It serves one scenario job
// on stdin, as a scenario process of the full suite does.

// scenarios is empty in this build: it runs only boundedScenario.
func scenarios() []Scenario { return nil }

func main() {
	if os.Getenv(scenarioChildEnv) == "" {
		fmt.Fprintln(os.Stderr, "this is the memory check's consumer process; run the suite: go -C bench run . -memcheck")
		os.Exit(2)
	}
	os.Exit(serveScenarioChild())
}
