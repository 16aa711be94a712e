package dedupe

import "errors"

// ErrNotAssigned is returned for calls naming a partition the store was not
// assigned, or that was released.
var ErrNotAssigned = errors.New("dedupe: partition not assigned to this store")

// ErrFenced is returned by a store's write when a newer owner of the
// partition has claimed it: this member must stop working on it.
var ErrFenced = errors.New("dedupe: partition claimed by a newer owner")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("dedupe: store closed")

// ErrKeyLengths is returned by an OffsetStore call whose keys, offsets and
// entries are not equally long.
var ErrKeyLengths = errors.New("dedupe: keys, offsets and entries of different lengths")
