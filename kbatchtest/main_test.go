package kbatchtest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every Cluster closes the clients and the kfake cluster it made.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
