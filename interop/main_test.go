package interop

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/kbatch/kbatch/internal/kafkatest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	kafkatest.Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
