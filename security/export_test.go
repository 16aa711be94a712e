package security

import (
	"testing"

	"github.com/twmb/franz-go/pkg/sasl"
)

// SASLMechanism exposes the franz-go mechanism a Config maps to, so that a
// test can drive its authentication exchange without a broker.
func SASLMechanism(t *testing.T, c Config) sasl.Mechanism {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c.SASL.mechanism()
}
