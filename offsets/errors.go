package offsets

import "errors"

// ErrFenced marks a per-partition commit error meaning this member no longer
// owns the partition in the group's current generation (an illegal
// generation, an unknown member, a stale member epoch, a fenced instance).
// A CommitFunc wraps such errors with ErrFenced; the Manager then forgets the
// partition and reports it through Config.OnFenced instead of retrying.
var ErrFenced = errors.New("offsets: commit fenced: partition no longer owned by this member")
