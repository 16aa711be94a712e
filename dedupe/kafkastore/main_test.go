package kafkastore

import (
	"os"
	"testing"

	"github.com/kbatch/kbatch/internal/kafkatest"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.Run(m)) }
