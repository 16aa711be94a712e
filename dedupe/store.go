package dedupe

import (
	"context"
	"time"

	"github.com/kbatch/kbatch/offsets"
)

// Partition is the input partition a key belongs to. Stores keep state per
// partition so that it can move with the partition when the group
// rebalances.
type Partition = offsets.Partition

// Entry is what a store remembers of one idempotency key.
type Entry struct {
	// Attempts is the dequeue count: how many times the record was handed
	// out, this delivery included (Begin increments it before returning).
	Attempts int
	// Markers are the names of the steps the handler declared finished, in
	// the order they were first marked.
	Markers []string
	// Done is true once the record was handled successfully (or dead-lettered).
	Done bool
	// Expires is when the store may forget the key. Zero means the store's
	// default retention applies.
	Expires time.Time
}

// HasMarker reports whether the entry holds the marker.
func (e Entry) HasMarker(m string) bool {
	for _, x := range e.Markers {
		if x == m {
			return true
		}
	}
	return false
}

// Store keeps idempotency entries. It is batch-oriented: one round trip per
// batch to begin, one to mark done. Implementations are safe for concurrent
// use by the workers of different partitions; calls for one partition come
// from one goroutine at a time.
//
// Contract (the conformance suite in dedupe/dedupetest checks it):
//   - Assign is called when the input partition is assigned, before its
//     first Begin; a store that keeps state per partition loads it here.
//     Assign fences writes made for p by any earlier owner: once Assign
//     returns, an earlier owner's later writes do not overwrite this one's.
//   - Lookup returns the entries of keys as they are, in the order of keys,
//     changing nothing (an unknown key is the zero Entry). kbatch reads a
//     batch with Lookup to decide what to hand out, then counts only what
//     it hands out with Begin. It is served from memory by stores that load
//     the partition on Assign.
//   - Begin durably increments Attempts of every key that is not done, once
//     per call (a key given twice in one call is one delivery), and returns
//     the entries after the increment, in the order of keys. Done keys are
//     returned done. A store may keep a done key as done and its expiry
//     only (Attempts 0, no Markers): a done key is never handed out again.
//   - A Begin that returned an error may have counted; a store should make
//     a Begin of the same keys right after it count the delivery once.
//   - Mark durably adds a marker to one key; Begin returns it later.
//   - Done marks keys done; Begin returns them as done until they
//     expire. Done may return before the write is durable (the Kafka
//     store's does, to wait on one round trip per batch), if the store
//     sees them as done from then on, makes the write durable without
//     another call, reports a failed write on the next call for p and
//     writes it again, and waits for it in Release and Close; once the
//     next Begin or Mark for p returned, it is durable. Until then a
//     crash, or another owner claiming p without Release, hands the keys
//     out again: at least once, as a crash between the handler and Done
//     does.
//   - Release is called when the partition is revoked or lost; the store
//     drops what it holds in memory for it. Calls for p after Release fail
//     with ErrNotAssigned.
//   - Malformed stored entries are reported (logged, counted) and skipped,
//     never a crash and never a reason to stop the partition.
type Store interface {
	Assign(ctx context.Context, p Partition) error
	Lookup(ctx context.Context, p Partition, keys []string) ([]Entry, error)
	Begin(ctx context.Context, p Partition, keys []string) ([]Entry, error)
	Mark(ctx context.Context, p Partition, key, marker string) error
	Done(ctx context.Context, p Partition, keys []string) error
	Release(p Partition)
	Close() error
}

// OffsetStore is a Store that also takes a partition's fallback keys
// (OffsetKey) as offsets, so that kbatch neither builds their strings nor
// the store parses them back, and a batch of consecutive offsets is one
// span of the store's. kbatch's consumer uses these calls when its store
// implements them, and the calls of Store otherwise; third-party stores
// need not implement them.
//
// Contract, besides Store's (the conformance suite checks it when the
// store implements OffsetStore):
//   - keys[i] == "" stands for OffsetKey(p.Topic, p.Partition, offsets[i]);
//     any other keys[i] is the key itself, as in Store's calls (a fallback
//     key given as a string included), and offsets[i] is ignored for it.
//     offsets is as long as keys.
//   - A key is the same key whichever way it is given: Begin of it by
//     offset then Lookup of its OffsetKey string sees the count, and so on.
//   - LookupOffsets and BeginOffsets write the entries into out (as long as
//     keys) instead of returning a new slice; otherwise they are Lookup and
//     Begin. DoneOffsets is Done.
//   - A call whose slices' lengths differ fails with ErrKeyLengths.
type OffsetStore interface {
	Store
	LookupOffsets(ctx context.Context, p Partition, keys []string, offsets []int64, out []Entry) error
	BeginOffsets(ctx context.Context, p Partition, keys []string, offsets []int64, out []Entry) error
	DoneOffsets(ctx context.Context, p Partition, keys []string, offsets []int64) error
}

// checkOffsetCall checks the lengths of an OffsetStore call's slices: out
// too when withOut.
func checkOffsetCall(keys []string, offsets []int64, out []Entry, withOut bool) error {
	if len(offsets) != len(keys) || withOut && len(out) != len(keys) {
		return ErrKeyLengths
	}
	return nil
}
