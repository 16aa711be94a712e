package consumer

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
)

// handle delivers one flushed batch until every record of it is complete:
// handled, skipped as already done, or dead-lettered. It reports false when
// the worker must stop instead (revoke, loss, close, fencing); the records not
// complete then stay uncommitted for the next owner.
func (w *worker) handle(recs []*kgo.Record, reason FlushReason) bool {
	c := w.c
	first, last := recs[0].Offset, recs[len(recs)-1].Offset
	if err := c.offsets.BeginLeased(w.tp, w.lease, first, last, recs[len(recs)-1].LeaderEpoch); err != nil {
		c.cfg.Logger.Warn("kbatch: batch not begun, stopping partition", "partition", w.tp.String(), "err", err)
		return false
	}
	return w.deliver(recs, reason)
}

// deliver is handle for records already begun in the offsets manager (a
// ByKey lane's batch, whose records were begun one by one as they arrived).
func (w *worker) deliver(recs []*kgo.Record, reason FlushReason) bool {
	c := w.c
	if c.cfg.Dedupe == nil && c.cfg.DeadLetter == nil {
		return w.handleSimple(recs, reason)
	}
	return w.handleTracked(recs, reason)
}

// handleSimple is the default path: the whole batch is retried until it
// succeeds. It allocates one Batch per delivery and nothing per record.
func (w *worker) handleSimple(recs []*kgo.Record, reason FlushReason) bool {
	b := &Batch{Topic: w.tp.Topic, Partition: w.tp.Partition, Records: recs, Reason: reason, w: w}
	done := 0 // recs[:done] are complete
	for attempt := 1; ; attempt++ {
		b.Attempt = attempt
		err := w.call(b)
		if err == nil {
			w.handled(len(recs) - done)
			w.complete(recs, done, len(recs))
			return true
		}
		w.c.stats.handlerErrors.Add(1)
		w.topic.retried.Add(int64(len(b.Records)))
		var pe *PartialError
		if errors.As(err, &pe) && pe.Index > 0 && pe.Index < len(b.Records) {
			w.c.stats.records.Add(int64(pe.Index))
			w.topic.handled.Add(int64(pe.Index))
			w.complete(recs, done, done+pe.Index)
			done += pe.Index
			b.Records = recs[done:]
			b.marks = nil
		}
		if !w.backoff(attempt+1, err, b) {
			return false
		}
	}
}

// complete marks recs[from:to] complete for the commit: handled, skipped or
// dead-lettered. Under a lease that is no longer current (the worker was
// abandoned and the partition assigned again) it does nothing.
func (w *worker) complete(recs []*kgo.Record, from, to int) {
	if to <= from {
		return
	}
	if w.lane != nil { // a ByKey lane: the records are not contiguous
		w.lane.complete(recs[from:to])
		return
	}
	wm, moved, err := w.c.offsets.DoneLeased(w.tp, w.lease, recs[from].Offset, recs[to-1].Offset, to-from)
	if err != nil {
		w.c.cfg.Logger.Error("kbatch: completing records", "partition", w.tp.String(), "err", err)
	}
	if moved {
		w.progress.advanced(wm.At, time.Now())
	}
}

// handled counts a successful handler call of n records.
func (w *worker) handled(n int) {
	w.c.stats.records.Add(int64(n))
	w.topic.handled.Add(int64(n))
	w.c.stats.batches.Add(1)
}

// backoff waits before retry number attempt (>= 2). It reports false when the
// worker must stop: a failing batch is not committed on revoke or close.
func (w *worker) backoff(attempt int, err error, b *Batch) bool {
	if w.ctx.Err() != nil {
		return false
	}
	wait := backoff(w.c.cfg.Retry, attempt-1)
	if len(b.Records) > 0 {
		w.c.sampler.log(w.c.cfg.Logger, slog.LevelWarn, "retry "+w.tp.String(), "kbatch: batch failed, retrying", "partition", w.tp.String(),
			"first_offset", b.FirstOffset(), "records", len(b.Records), "attempt", attempt-1, "retry_in", wait, "err", err)
	}
	return w.sleep(wait)
}

// handleTracked is the path with Dedupe and/or DeadLetter: per-record
// attempts (durable with a store), markers, done records skipped, and records
// handed out Retry.MaxAttempts times or failed permanently sent to the
// dead-letter topic.
//
// A record handed out before (a retry in this process, or a replay after a
// crash) is delivered alone, so that a poison record is narrowed down to
// itself: its neighbours are neither dead-lettered with it nor charged for
// deliveries that did not happen.
func (w *worker) handleTracked(recs []*kgo.Record, reason FlushReason) bool {
	c := w.c
	st := make([]recState, len(recs))
	if d := c.cfg.Dedupe; d != nil {
		for i, r := range recs {
			st[i].key = dedupe.KeyOf(r, d.Header, d.Key)
		}
		// What the store knows: attempts so far, markers, done. Read only:
		// nothing is counted for records that are not delivered.
		if !c.gate.lookup(w, st) {
			return false
		}
	}
	head := 0 // recs[:head] are complete
	failures := 0
	for head < len(recs) {
		// Records done earlier (by a previous owner or incarnation) are
		// complete without the handler.
		if st[head].done {
			end := head + 1
			for end < len(recs) && st[end].done {
				end++
			}
			w.complete(recs, head, end)
			c.stats.skipped.Add(int64(end - head))
			w.topic.skipped.Add(int64(end - head))
			head = end
			continue
		}
		// Handed out MaxAttempts times already: to the dead-letter topic,
		// not the handler.
		if max := c.cfg.Retry.MaxAttempts; max > 0 && st[head].attempts >= max {
			reason := st[head].lastErr
			if reason == "" {
				reason = fmt.Sprintf("handed out %d times without completing (the process crashed or lost the partition each time)", st[head].attempts)
			}
			if !w.deadLetter(recs[head], &st[head], st[head].attempts, reason) {
				return false
			}
			w.complete(recs, head, head+1)
			head++
			continue
		}
		// The delivery: the head alone if it was handed out before, else
		// up to the next record that was, or is done, or the end.
		end := head + 1
		if st[head].attempts == 0 {
			for end < len(recs) && st[end].attempts == 0 && !st[end].done {
				end++
			}
		}
		// Count the delivery before the handler runs (durably with a store):
		// a crash inside the handler still leaves it counted.
		if !c.gate.begin(w, st[head:end]) {
			return false
		}
		b := &Batch{Topic: w.tp.Topic, Partition: w.tp.Partition, Reason: reason, w: w, Attempt: st[head].attempts,
			Records: recs[head:end], state: make([]*recState, end-head)}
		for i := range b.state {
			b.state[i] = &st[head+i]
		}
		err := w.call(b)
		if err == nil {
			if !c.gate.markDone(w, st[head:end]) {
				return false
			}
			w.handled(end - head)
			w.complete(recs, head, end)
			head, failures = end, 0
			continue
		}
		c.stats.handlerErrors.Add(1)
		w.topic.retried.Add(int64(end - head))
		if w.ctx.Err() != nil {
			return false
		}
		failedAt, ferr := -1, err // index into recs of the failing record, if known
		var pe *PartialError
		if errors.As(err, &pe) && pe.Index >= 0 && pe.Index < end-head {
			failedAt, ferr = head+pe.Index, pe.Err
			if failedAt > head { // the records before it were handled
				if !c.gate.markDone(w, st[head:failedAt]) {
					return false
				}
				c.stats.records.Add(int64(failedAt - head))
				w.topic.handled.Add(int64(failedAt - head))
				w.complete(recs, head, failedAt)
				head = failedAt
			}
		}
		for i := head; i < end; i++ {
			if failedAt < 0 || i == failedAt {
				st[i].lastErr = ferr.Error()
			}
		}
		if IsPermanent(ferr) && c.cfg.DeadLetter != nil {
			to := end // the whole delivery
			if failedAt >= 0 {
				to = failedAt + 1
			}
			for i := head; i < to; i++ {
				if !w.deadLetter(recs[i], &st[i], st[i].attempts, st[i].lastErr) {
					return false
				}
			}
			w.complete(recs, head, to)
			head, failures = to, 0
			continue
		}
		failures++
		if !w.backoff(failures+1, err, b) {
			return false
		}
	}
	return true
}
