package security

import "errors"

// ErrInvalidConfig is matched (errors.Is) by every error Validate and
// Options return; the error is a *ConfigError naming the field.
var ErrInvalidConfig = errors.New("security: invalid config")

// ConfigError names the Config field that was refused and why. Its text
// never holds a password or a token.
type ConfigError struct {
	Field  string // e.g. "SASL.User"
	Reason string
}

func (e *ConfigError) Error() string { return "security: Config." + e.Field + " " + e.Reason }

// Is makes a ConfigError match ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }
