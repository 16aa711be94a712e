package consumer

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kbatch/kbatch/security"
)

// TestNewRefusesInvalidSecurity guards the Security field's validation: a
// SASL config without a user is refused by New as a ConfigError for
// "Security" (and never reaches kgo, which would fail only when it dials),
// and the error does not hold the password.
func TestNewRefusesInvalidSecurity(t *testing.T) {
	const pw = "pw-never-in-an-error"
	_, err := New(Config{
		Brokers: []string{"127.0.0.1:1"}, Group: "g", Topics: []string{"t"},
		Security: security.Config{SASL: &security.SASL{Mechanism: security.ScramSHA512, Password: pw}},
	}, func(context.Context, *Batch) error { return nil })
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "Security" || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New = %v, want a ConfigError for Security", err)
	}
	if !strings.Contains(err.Error(), "SASL.User") {
		t.Fatalf("error %q does not name SASL.User", err)
	}
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("error %q holds the password", err)
	}
}
