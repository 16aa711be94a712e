package consumer

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Handler handles one batch. It returns nil when every record of the batch
// was handled; then the records count as complete for the commit. Any error
// (or a panic, which becomes a *PanicError) retries the whole batch after a
// backoff; the partition waits meanwhile, the others go on.
//
// ctx is cancelled when the partition is lost, when a revoke or a close
// outlasts DrainTimeout, or when the consumer stops hard. The handler must
// not keep b or its Records after it returns.
type Handler func(ctx context.Context, b *Batch) error

// Batch is a run of consecutive records of one partition, in offset order.
type Batch struct {
	Topic     string
	Partition int32
	// Records in offset order. Offsets may have gaps (compaction,
	// transaction markers).
	Records []*kgo.Record
	// Attempt is 1 on the first delivery of this batch to the handler and
	// grows with each retry within this process.
	Attempt int
	// Reason says why the batch was cut.
	Reason FlushReason
}

// FirstOffset is the offset of the batch's first record.
func (b *Batch) FirstOffset() int64 { return b.Records[0].Offset }

// LastOffset is the offset of the batch's last record.
func (b *Batch) LastOffset() int64 { return b.Records[len(b.Records)-1].Offset }

// FlushReason is why a batch was cut.
type FlushReason uint8

const (
	FlushRecords FlushReason = iota // Batch.MaxRecords reached
	FlushBytes                      // Batch.MaxBytes reached
	FlushWait                       // Batch.MaxWait passed since the first record
	FlushDrain                      // partition revoked or consumer closing
)

func (r FlushReason) String() string {
	switch r {
	case FlushRecords:
		return "records"
	case FlushBytes:
		return "bytes"
	case FlushWait:
		return "wait"
	case FlushDrain:
		return "drain"
	}
	return "unknown"
}

func recordSize(r *kgo.Record) int { return len(r.Key) + len(r.Value) }
