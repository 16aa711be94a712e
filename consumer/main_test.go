package consumer

import (
	"os"
	"testing"

	"github.com/kbatch/kbatch/internal/kafkatest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		// This test binary was started by a crash test as a group member.
		os.Exit(runChild())
	}
	os.Exit(kafkatest.Run(m))
}
