package kafkastore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A Done does not wait for its records to be acknowledged: it is the one
// write of a batch that nothing in the same batch waits on, so waiting
// for it doubled the round trips per batch. Its records are produced as a
// round, and the next write of the partition (the Begin of the next
// batch, a Mark, a Done that cannot go asynchronously) waits for it after
// producing its own records. The store's client is an idempotent producer
// writing to the exact partition, so one changelog partition's records
// land in the order they were produced and their acknowledgements come in
// that order: by the time the next write's records are acknowledged the
// Done's are too, and the wait costs nothing.
//
// A Done's records are not even sent alone: the client lingers
// (Options.DoneLinger, 5ms by default) and the next write sends its own with
// ProduceSync, which sends at once the partition's records lingering before
// them. Both go in one produce request. A broker serves one request of a
// connection at a time, so a Done sent alone, still in flight when the next
// Begin came, made that Begin wait for two round trips. A Done that no write
// follows within the linger is sent on its own.
//
// What a crash can do, and why it is no worse than before:
//   - Done is called after the handler succeeded, as before. A crash after
//     the handler and before the Done's records are in the log hands the
//     batch out again (attempts counted, not done): the window of a
//     synchronous Done, which could also crash before its ack. It now
//     lasts until the records are acknowledged: the next write's round
//     trip, or DoneLinger and a round trip when none follows.
//   - The consumer may commit the batch's offsets before the Done's records
//     are acknowledged. A committed record is not read again, so its key
//     being done or not no longer matters to the group; a replay from an
//     earlier offset (a reset by hand) hands it out again: at least once.
//   - Attempts are durable before the handler (Begin waits), markers before
//     Mark returns (Mark waits), as before.
//
// A failed round is never dropped: the next write of the partition returns
// its error (the consumer retries that call) and produces its records again
// ahead of its own, until they land. Its keys are done in memory meanwhile,
// as they were when Done returned. Release and Close wait for the rounds
// in flight, up to flushTimeout, produce the failed ones once more, and log
// what still failed: those keys are handed out again if their records come
// back, at least once. (Close flushes the client instead, then logs the
// rounds that failed: its client is closed right after.)

// round is a Done's records produced without waiting for them.
type round struct {
	recs []*kgo.Record
	left atomic.Int32
	done chan struct{} // closed when every record was acknowledged or failed

	mu  sync.Mutex
	err error // the first failure, under mu
}

// produceRound produces recs in the background, with a context of their
// own: the records of a call that already returned are not failed by the
// cancellation of its context.
func (s *Store) produceRound(recs []*kgo.Record) *round {
	r := &round{recs: recs, done: make(chan struct{})}
	r.left.Store(int32(len(recs)))
	for _, rec := range recs {
		s.producer(rec.Partition).Produce(context.Background(), rec, r.ack)
	}
	return r
}

func (r *round) ack(_ *kgo.Record, err error) {
	if err != nil {
		r.mu.Lock()
		if r.err == nil {
			r.err = err
		}
		r.mu.Unlock()
	}
	if r.left.Add(-1) == 0 {
		close(r.done)
	}
}

// failed reports the round's error once it is over, or nil.
func (r *round) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// over reports whether every record of the round was acknowledged or
// failed, without waiting.
func (r *round) over() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// wait waits until the round is over or ctx is done.
func (r *round) wait(ctx context.Context) error {
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// again returns copies of recs to produce once more: a record handed to
// the client is the client's until its promise ran, and carries the
// offset and time of its first try.
func again(recs []*kgo.Record) []*kgo.Record {
	out := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		out[i] = &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers}
	}
	return out
}

// maxRounds bounds the Done rounds of a partition in flight: past it a Done
// waits for its records, as does any other write.
const maxRounds = 8

// flushTimeout bounds how long Release and Close wait for Done rounds in
// flight, and for the one more try of those that failed.
const flushTimeout = 10 * time.Second

// settle waits for the partition's Done rounds in flight (they were
// produced before any record the caller produced since) and takes them
// off: their records, when they all landed, are returned in the order
// they were produced; the records of rounds that failed go to ps.resend,
// and the first failure is returned. A round still in flight when ctx ends
// stays in flight. Called with ps.mu held.
func (ps *partition) settle(ctx context.Context) (landed []*kgo.Record, err error) {
	for len(ps.inflight) > 0 {
		r := ps.inflight[0]
		if werr := r.wait(ctx); werr != nil {
			return landed, werr
		}
		ps.inflight = ps.inflight[1:]
		if ferr := r.failed(); ferr != nil {
			ps.resend = append(ps.resend, r.recs...)
			if err == nil {
				err = ferr
			}
			continue
		}
		landed = append(landed, r.recs...)
	}
	ps.inflight = nil
	return landed, err
}

// roundFailed reports whether a Done round of the partition is known to
// have failed, without waiting. Called with ps.mu held.
func (ps *partition) roundFailed() bool {
	for _, r := range ps.inflight {
		if r.over() && r.failed() != nil {
			return true
		}
	}
	return false
}

// flush waits, up to flushTimeout, for the partition's Done rounds in
// flight, produces the records of those that failed once more, and logs
// what still failed. Release calls it before dropping the partition.
// Called with ps.mu held.
func (s *Store) flush(ps *partition) {
	if len(ps.inflight) == 0 && len(ps.resend) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	_, err := ps.settle(ctx)
	if len(ps.resend) > 0 {
		err = s.producer(ps.p.Partition).ProduceSync(ctx, again(ps.resend)...).FirstErr()
		if err == nil {
			ps.resend = nil
		}
	}
	if err != nil || len(ps.resend) > 0 || len(ps.inflight) > 0 {
		s.opts.Logger.Warn("kafkastore: keys done could not be written before the partition was released; their records are handed out again if they are read again",
			"partition", ps.p.String(), "err", err)
	}
}
