package batcher

import (
	"errors"
	"fmt"
	"time"
)

// Policy says when a batch is closed. A batch is closed by whichever limit is
// reached first.
type Policy struct {
	// MaxRecords closes a batch when it holds this many items. Must be > 0.
	MaxRecords int
	// MaxBytes closes a batch before an item would push its size over this
	// many bytes. 0 means no byte limit.
	MaxBytes int
	// MaxWait closes a batch this long after its first item was added.
	// 0 means no time limit (the batch waits for the count or byte limit, or
	// an explicit flush).
	MaxWait time.Duration
}

// Validate reports the first invalid field of p.
func (p Policy) Validate() error {
	switch {
	case p.MaxRecords <= 0:
		return fmt.Errorf("batcher: MaxRecords must be > 0, got %d", p.MaxRecords)
	case p.MaxBytes < 0:
		return fmt.Errorf("batcher: MaxBytes must be >= 0, got %d", p.MaxBytes)
	case p.MaxWait < 0:
		return fmt.Errorf("batcher: MaxWait must be >= 0, got %s", p.MaxWait)
	}
	return nil
}

// ErrInvalidPolicy is wrapped by New's error when the policy is invalid.
var ErrInvalidPolicy = errors.New("batcher: invalid policy")

// Batcher accumulates items into one open batch. It is not safe for
// concurrent use: it belongs to one goroutine (in kbatch, a partition worker).
type Batcher[T any] struct {
	policy  Policy
	items   []T
	bytes   int
	firstAt time.Time
}

// New returns a Batcher for the policy, or an error naming the invalid field.
func New[T any](p Policy) (*Batcher[T], error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	capHint := p.MaxRecords
	if capHint > 4096 {
		capHint = 4096
	}
	return &Batcher[T]{policy: p, items: make([]T, 0, capHint)}, nil
}

// Policy returns the batcher's policy.
func (b *Batcher[T]) Policy() Policy { return b.policy }

// Len is the number of items in the open batch.
func (b *Batcher[T]) Len() int { return len(b.items) }

// Bytes is the size of the open batch, as the sum of the sizes given to Add.
func (b *Batcher[T]) Bytes() int { return b.bytes }

// Fits reports whether an item of the given size can join the open batch
// without pushing it over MaxBytes. An empty batch accepts any item.
func (b *Batcher[T]) Fits(size int) bool {
	if b.policy.MaxBytes == 0 || len(b.items) == 0 {
		return true
	}
	return b.bytes+size <= b.policy.MaxBytes
}

// Add appends item to the open batch and reports whether the batch is now
// full (MaxRecords reached, or MaxBytes reached exactly or by a single
// oversized item) and must be flushed before the next Add. now is used only
// when item is the first of a batch: it starts the MaxWait window.
//
// Add does not check Fits: call Fits first and Flush when it says no.
func (b *Batcher[T]) Add(now time.Time, item T, size int) (full bool) {
	if len(b.items) == 0 {
		b.firstAt = now
	}
	b.items = append(b.items, item)
	b.bytes += size
	return b.Full()
}

// Full reports whether the open batch reached MaxRecords or MaxBytes.
func (b *Batcher[T]) Full() bool {
	if len(b.items) >= b.policy.MaxRecords {
		return true
	}
	return b.policy.MaxBytes > 0 && b.bytes >= b.policy.MaxBytes
}

// Deadline returns when the open batch must be flushed because of MaxWait.
// ok is false when the batch is empty or MaxWait is 0.
func (b *Batcher[T]) Deadline() (deadline time.Time, ok bool) {
	if len(b.items) == 0 || b.policy.MaxWait == 0 {
		return time.Time{}, false
	}
	return b.firstAt.Add(b.policy.MaxWait), true
}

// Due reports whether the open batch's MaxWait window has ended at now.
func (b *Batcher[T]) Due(now time.Time) bool {
	d, ok := b.Deadline()
	return ok && !now.Before(d)
}

// Flush closes the open batch and returns its items; the batcher starts a new
// empty batch. The returned slice is owned by the caller: the batcher never
// touches it again. Flush on an empty batcher returns nil.
func (b *Batcher[T]) Flush() []T {
	if len(b.items) == 0 {
		return nil
	}
	out := b.items
	b.items = make([]T, 0, cap(out))
	b.bytes = 0
	b.firstAt = time.Time{}
	return out
}
