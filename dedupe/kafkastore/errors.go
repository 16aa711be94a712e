package kafkastore

import (
	"errors"
	"fmt"
)

// ErrInvalidOptions is matched (errors.Is) by every error New returns for
// bad Options; the error is an *OptionsError naming the field.
var ErrInvalidOptions = errors.New("kafkastore: invalid options")

// OptionsError names the Options field New refused and why.
type OptionsError struct {
	Field  string
	Reason string
}

func (e *OptionsError) Error() string {
	return fmt.Sprintf("kafkastore: Options.%s %s", e.Field, e.Reason)
}

// Is makes an OptionsError match ErrInvalidOptions.
func (e *OptionsError) Is(target error) bool { return target == ErrInvalidOptions }

// PartitionCountError is returned by Assign when the changelog topic exists
// with a partition count other than the input topic's: changelog partition
// p must hold the keys of input partition p, so the counts must agree.
type PartitionCountError struct {
	Changelog           string
	ChangelogPartitions int
	Input               string
	InputPartitions     int
}

func (e *PartitionCountError) Error() string {
	return fmt.Sprintf("kafkastore: changelog topic %q has %d partitions but input topic %q has %d; "+
		"the changelog must have as many partitions as the input (add partitions to the changelog, "+
		"or delete it if its idempotency state may be lost)",
		e.Changelog, e.ChangelogPartitions, e.Input, e.InputPartitions)
}
