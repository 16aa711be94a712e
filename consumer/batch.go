package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
)

// Handler handles one batch. It returns nil when every record of the batch
// was handled; then the records count as complete for the commit. An error
// (or a panic, which becomes a *PanicError) retries the batch after a
// backoff; the partition waits meanwhile, the others go on. FailedAt(i, err)
// says the records before i were handled, and Permanent(err) that retrying
// cannot help (see DeadLetter).
//
// ctx is cancelled when the partition is lost, when a revoke or a close
// outlasts DrainTimeout, or when the consumer stops hard. The handler must
// not keep b or its Records after it returns.
type Handler func(ctx context.Context, b *Batch) error

// Batch is a run of records of one partition, in offset order.
type Batch struct {
	Topic     string
	Partition int32
	// Records in offset order. Offsets may have gaps (compaction,
	// transaction markers, and with Dedupe the records already done).
	Records []*kgo.Record
	// Attempt is how many times the batch's first record has been handed
	// to a handler, this time included: 1 on a first delivery. With a
	// Dedupe store the count survives restarts.
	Attempt int
	// Reason says why the batch was cut.
	Reason FlushReason

	w     *worker
	token FencingToken     // Token of a batch without a worker (NewTestBatch)
	state []*recState      // per record of Records; nil without Dedupe and DeadLetter
	marks map[int][]string // markers when state is nil
}

// recState is what kbatch knows of one record while it is being delivered.
type recState struct {
	key       string // "" when byOffset
	keyEnd    int    // where key ends in the batch's string of keys
	off       int64  // the record's offset
	byOffset  bool   // the key is the record's fallback key, given to an OffsetStore as off
	attempts  int    // deliveries that reached the record, this one included
	uncharged int    // deliveries that stopped before the record (FailedAt): in the store's count, not in attempts
	markers   []string
	done      bool  // handled, dead-lettered, or done in the store
	skip      bool  // done without a delivery in this batch: counted as skipped
	copyOf    int32 // 1 + the index of the batch's first record with the same key; 0 if none
	lastErr   string
	rejected  error // set by Batch.Reject during the current delivery
}

// keyIn is the record's key as a string; the record is of topic and
// partition.
func (s *recState) keyIn(topic string, partition int32) string {
	if s.byOffset {
		return dedupe.OffsetKey(topic, partition, s.off)
	}
	return s.key
}

// Token is the fencing token of this member's ownership of the batch's
// partition (see FencingToken): the same for every batch until the
// partition is revoked or lost, and greater for every later owner. A
// handler that writes to a sink together with its offset stores the token
// in the same transaction and refuses to write under a token smaller than
// the stored one (examples/pg-sink).
func (b *Batch) Token() FencingToken {
	if b.w != nil {
		return b.w.token
	}
	return b.token
}

// FirstOffset is the offset of the batch's first record.
func (b *Batch) FirstOffset() int64 { return b.Records[0].Offset }

// LastOffset is the offset of the batch's last record.
func (b *Batch) LastOffset() int64 { return b.Records[len(b.Records)-1].Offset }

// Attempts returns how many times record i has been handed to a handler,
// this time included (the dequeue count). It is durable with a Dedupe store.
func (b *Batch) Attempts(i int) int {
	if b.state == nil {
		return max(b.Attempt, 1)
	}
	return b.state[i].attempts
}

// Key returns record i's idempotency key (with Dedupe), or "" without.
func (b *Batch) Key(i int) string {
	if b.state == nil {
		return ""
	}
	return b.state[i].keyIn(b.Topic, b.Partition)
}

// Markers returns the steps marked finished for record i by earlier
// deliveries or by this one.
func (b *Batch) Markers(i int) []string {
	if b.state == nil {
		return slices.Clone(b.marks[i])
	}
	return slices.Clone(b.state[i].markers)
}

// HasMarker reports whether record i carries the marker.
func (b *Batch) HasMarker(i int, marker string) bool {
	if b.state == nil {
		return slices.Contains(b.marks[i], marker)
	}
	return slices.Contains(b.state[i].markers, marker)
}

// Mark records that the step named marker is finished for record i. With a
// Dedupe store it is written durably before Mark returns, so a delivery after
// a crash sees it and can skip the step; without one it lasts for the
// retries within this process.
func (b *Batch) Mark(ctx context.Context, i int, marker string) error {
	if i < 0 || i >= len(b.Records) {
		return fmt.Errorf("kbatch: Mark: record index %d out of range [0, %d)", i, len(b.Records))
	}
	if b.state == nil {
		if !slices.Contains(b.marks[i], marker) {
			if b.marks == nil {
				b.marks = make(map[int][]string)
			}
			b.marks[i] = append(b.marks[i], marker)
		}
		return nil
	}
	st := b.state[i]
	if slices.Contains(st.markers, marker) {
		return nil
	}
	if b.w != nil { // nil in a NewTestBatch: no store
		if err := b.w.c.gate.mark(ctx, b.w.tp, st.keyIn(b.Topic, b.Partition), marker); err != nil {
			return fmt.Errorf("kbatch: Mark %q on %s offset %d: %w", marker, b.w.tp, b.Records[i].Offset, err)
		}
	}
	st.markers = append(st.markers, marker)
	return nil
}

// ErrRejectNeedsDeadLetter is returned by Batch.Reject when the consumer
// has no dead-letter topic: a record can only be rejected into one.
var ErrRejectNeedsDeadLetter = errors.New("kbatch: Reject needs Config.DeadLetter")

// Reject sends record i to the dead-letter topic, with err as the reason,
// without failing the batch: the handler goes on with the other records
// and returns nil when it is through with them. Once it returned, the
// rejected records are written to the dead-letter topic (and recorded done
// with Dedupe), the others recorded handled. Use it for a record that can
// never be handled (malformed, failing validation); a record that may pass
// later is a failure (FailedAt), retried.
//
// If the handler returns an error, the rejections of the records it did
// not complete are dropped: a whole-batch error drops them all, FailedAt(j,
// ...) keeps those of the records before j. The retry decides again.
//
// Reject returns ErrRejectNeedsDeadLetter without DeadLetter (the record
// is not rejected), and an error for an index out of range or a nil err.
func (b *Batch) Reject(i int, err error) error {
	if i < 0 || i >= len(b.Records) {
		return fmt.Errorf("kbatch: Reject: record index %d out of range [0, %d)", i, len(b.Records))
	}
	if err == nil {
		return errors.New("kbatch: Reject: a nil reason")
	}
	if b.state == nil || (b.w != nil && b.w.c.cfg.DeadLetter == nil) {
		return ErrRejectNeedsDeadLetter
	}
	b.state[i].rejected = err
	return nil
}

// Rejected returns the reason record i was rejected with in this delivery,
// or nil. Handler tests read it from a NewTestBatch.
func (b *Batch) Rejected(i int) error {
	if b.state == nil || i < 0 || i >= len(b.state) {
		return nil
	}
	return b.state[i].rejected
}

// FlushReason is why a batch was cut.
type FlushReason uint8

const (
	FlushRecords  FlushReason = iota // Batch.MaxRecords reached
	FlushBytes                       // Batch.MaxBytes reached
	FlushWait                        // Batch.MaxWait passed since the first record
	FlushBuffer                      // the member's buffer was full: the largest open batches are closed
	FlushIdle                        // MaxWait is off and no record arrived for IdleFlush
	FlushRevoke                      // the partition is revoked
	FlushClose                       // the consumer is closing
	FlushReady                       // ByKey or Resequence: records were ready and a goroutine free
	FlushCaughtUp                    // a poll left the partition behind and a later one reached its end

	numFlushReasons = iota
)

// FlushReasons lists every flush reason, in the order of Stats.Flushes.
var FlushReasons = []FlushReason{FlushRecords, FlushBytes, FlushWait, FlushBuffer, FlushIdle, FlushRevoke, FlushClose, FlushReady, FlushCaughtUp}

// IdleFlush is how long no record may arrive, with MaxWait off, before the
// open batches are closed (FlushIdle): MaxWait off never leaves the last
// records of a quiet partition waiting for ever.
const IdleFlush = 500 * time.Millisecond

func (r FlushReason) String() string {
	switch r {
	case FlushRecords:
		return "records"
	case FlushBytes:
		return "bytes"
	case FlushWait:
		return "wait"
	case FlushBuffer:
		return "buffer"
	case FlushIdle:
		return "idle"
	case FlushRevoke:
		return "revoke"
	case FlushClose:
		return "close"
	case FlushReady:
		return "ready"
	case FlushCaughtUp:
		return "caught_up"
	}
	return "unknown"
}

func recordSize(r *kgo.Record) int { return len(r.Key) + len(r.Value) }
