//go:build !memchild

package main

import (
	"os"
	"sync"
	"testing"
)

// TestMain lets the test binary serve as the kfake broker process and as a
// scenario process, as the bench binary does (see startKfakeChild and
// runIsolated).
func TestMain(m *testing.M) {
	if n := os.Getenv(childEnv); n != "" {
		os.Exit(serveKfakeChild(n))
	}
	if os.Getenv(scenarioChildEnv) != "" {
		os.Exit(serveScenarioChild())
	}
	code := m.Run()
	if shared != nil {
		_ = shared.Close()
	}
	os.Exit(code)
}

var (
	sharedOnce sync.Once
	shared     *broker
	sharedErr  error
)

// testBroker is one in-process kfake cluster shared by the package's tests;
// each test uses its own topic and groups.
func testBroker(t *testing.T) *broker {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = startKfakeInProcess(1) })
	if sharedErr != nil {
		t.Fatalf("starting kfake: %v", sharedErr)
	}
	return shared
}
