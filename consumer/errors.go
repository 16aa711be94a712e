package consumer

import (
	"errors"
	"fmt"
)

// ErrInvalidConfig is matched by every error New returns for a bad Config
// (see ConfigError for the field).
var ErrInvalidConfig = errors.New("kbatch: invalid config")

// ErrClosed is returned by Run when the consumer was already closed.
var ErrClosed = errors.New("kbatch: consumer closed")

// PanicError is the error a handler panic becomes: the batch is retried like
// any failed batch and the process does not crash.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("kbatch: handler panic: %v", e.Value) }
