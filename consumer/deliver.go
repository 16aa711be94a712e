package consumer

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
			b.marks = shiftMarks(b.marks, pe.Index)
		}
		if !w.backoff(attempt+1, err, b) {
			return false
		}
	}
}

// shiftMarks returns the markers of a batch whose first n records were
// cut off, under the indexes the records have in the shorter batch: marks
// follow their records into the retry.
func shiftMarks(marks map[int][]string, n int) map[int][]string {
	if len(marks) == 0 {
		return nil
	}
	out := make(map[int][]string, len(marks))
	for i, ms := range marks {
		if i >= n {
			out[i-n] = ms
		}
	}
	return out
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
// attempts (durable with a store), markers, done records skipped, records
// rejected by the handler or failed permanently sent to the dead-letter
// topic, and records handed out Retry.MaxAttempts times dead-lettered
// instead of handed out again.
//
// Each idempotency key is handed out once per batch: later copies of a key
// (a producer retry landing next to the original) are held back and skipped
// once the first copy is complete, and a key done is never handed out
// again, on a first delivery or on a retry.
//
// A record handed out before (a retry in this process, or a replay after a
// crash) is delivered alone, so that a poison record is narrowed down to
// itself: its neighbours are neither dead-lettered with it nor charged for
// deliveries that did not happen. Records after the index of a FailedAt were
// not reached by the handler: that delivery is not charged to them.
//
// When the store refuses the partition (a newer owner claimed it, or it
// was not assigned), the worker claims it again and starts the batch over
// from its first record not complete, reading the store afresh.
func (w *worker) handleTracked(recs []*kgo.Record, reason FlushReason) bool {
	for {
		n, ok := w.deliverTracked(recs, reason)
		if ok {
			return true
		}
		if !w.c.gate.recover(w) {
			return false
		}
		recs = recs[n:]
	}
}

// deliverTracked delivers recs until every record is complete and reports
// true, or reports false with n, how many leading records were completed,
// when it had to stop. The worker must stop then, unless the store refused
// the partition (see gate.recover).
func (w *worker) deliverTracked(recs []*kgo.Record, reason FlushReason) (n int, ok bool) {
	c := w.c
	w.bufs = trackPool.Get().(*trackBufs)
	defer w.putBufs()
	st := w.recStates(len(recs))
	if d := c.cfg.Dedupe; d != nil {
		// The batch's keys in one string, each record's a slice of it:
		// one allocation per batch, not one per record. A store that
		// takes fallback keys by offset gets them so: no string at all.
		var buf []byte
		if c.gate.offs != nil {
			for i, r := range recs {
				var given bool
				buf, given = dedupe.AppendGivenKey(buf, r, d.Header, d.Key)
				st[i].keyEnd, st[i].off, st[i].byOffset = len(buf), r.Offset, !given
			}
		} else {
			buf = make([]byte, 0, len(recs)*(len(w.tp.Topic)+16))
			for i, r := range recs {
				buf = dedupe.AppendKey(buf, r, d.Header, d.Key)
				st[i].keyEnd, st[i].off = len(buf), r.Offset
			}
		}
		if len(buf) > 0 {
			all, from := string(buf), 0
			for i := range st {
				st[i].key, from = all[from:st[i].keyEnd], st[i].keyEnd
			}
		}
		// What the store knows: attempts so far, markers, done. Read only:
		// nothing is counted for records that are not delivered.
		if !c.gate.lookup(w, st) {
			return 0, false
		}
		markCopies(st)
	}
	t := tracked{w: w, recs: recs, st: st}
	for {
		t.settle()
		if t.head == len(recs) {
			return t.head, true
		}
		head := &st[t.head]
		// Handed out MaxAttempts times already: to the dead-letter topic,
		// not the handler.
		if max := c.cfg.Retry.MaxAttempts; max > 0 && head.attempts >= max {
			why := head.lastErr
			if why == "" {
				why = fmt.Sprintf("handed out %d times without completing (the process stopped, crashed or lost the partition during each delivery)", head.attempts)
			}
			if !w.deadLetter(recs[t.head], head, head.attempts, why) {
				return t.head, false
			}
			continue
		}
		idx := t.next()
		// Count the delivery before the handler runs (durably with a store):
		// a crash inside the handler still leaves it counted.
		if !c.gate.begin(w, st, idx) {
			return t.head, false
		}
		idx = t.dropDone(idx)
		if len(idx) == 0 {
			continue
		}
		if !t.deliver(idx, reason) {
			return t.head, false
		}
	}
}

// trackBufs are the slices of one batch on the tracked path: its records'
// states, a delivery's Records, states and indexes, and the gate's calls'
// slices. A worker takes a set from trackPool for a batch and gives it
// back, cleared, when the batch is done with, so that a member holds as
// many sets as it has batches in delivery, not one per partition it owns
// (a set for 1000-record batches is about 240 KiB: 240 MiB at 1024
// partitions).
type trackBufs struct {
	st   []recState
	recs []*kgo.Record
	stat []*recState
	idx  []int
	gate gateBufs
}

var trackPool = sync.Pool{New: func() any { return new(trackBufs) }}

// putBufs clears the worker's set of slices, so that it holds no record,
// key or marker, and gives it back to the pool.
func (w *worker) putBufs() {
	b := w.bufs
	w.bufs = nil
	clear(b.st)
	clear(b.recs)
	clear(b.stat)
	clear(b.gate.keys[:cap(b.gate.keys)]) // a shorter call after a longer one left strings past its length
	clear(b.gate.entries[:cap(b.gate.entries)])
	b.st, b.gate.keys, b.gate.entries = b.st[:0], b.gate.keys[:0], b.gate.entries[:0]
	trackPool.Put(b)
}

// recStates returns the batch's slice of n zeroed record states (cleared
// when the last batch gave its set back).
func (w *worker) recStates(n int) []recState {
	b := w.bufs
	if cap(b.st) < n {
		b.st = make([]recState, n)
	}
	b.st = b.st[:n]
	return b.st
}

// deliveryBufs returns the batch's slices for a delivery of n records'
// Records and states, reused from delivery to delivery, each capped at n:
// an append to Records by the handler cannot reach past them.
func (w *worker) deliveryBufs(n int) ([]*kgo.Record, []*recState) {
	b := w.bufs
	if cap(b.recs) < n {
		b.recs, b.stat = make([]*kgo.Record, n), make([]*recState, n)
	}
	b.recs, b.stat = b.recs[:cap(b.recs)], b.stat[:cap(b.stat)]
	return b.recs[:n:n], b.stat[:n:n]
}

// tracked is one batch on the tracked path.
type tracked struct {
	w    *worker
	recs []*kgo.Record
	st   []recState
	head int // recs[:head] are complete for the commit

	failures int // failed handler calls in a row, for the backoff
}

// markCopies links each record whose key an earlier record of the batch
// already has to that record: it is held back while the first copy is being
// delivered and skipped once that copy is done.
func markCopies(st []recState) {
	if len(st) < 2 {
		return
	}
	var first map[string]int32
	for i := range st {
		if st[i].done || st[i].byOffset || dedupe.IsOffsetKey(st[i].key) {
			continue // fallback keys are distinct within a partition
		}
		if first == nil {
			first = make(map[string]int32, len(st)-i)
		}
		if j, ok := first[st[i].key]; ok {
			st[i].copyOf = j + 1
			continue
		}
		first[st[i].key] = int32(i)
	}
}

// settle completes the records at the head that need no delivery: done
// (skipped), copies of a key whose first copy is complete (skipped), and
// those already handled or dead-lettered.
func (t *tracked) settle() {
	w := t.w
	from, skipped := t.head, 0
	for ; t.head < len(t.recs); t.head++ {
		s := &t.st[t.head]
		if s.copyOf > 0 && !s.done {
			if !t.st[s.copyOf-1].done {
				break // cannot happen: the first copy comes first
			}
			s.done = true
			s.skip = true
		}
		if !s.done {
			break
		}
		if s.skip {
			skipped++
		}
	}
	if skipped > 0 {
		w.c.stats.skipped.Add(int64(skipped))
		w.topic.skipped.Add(int64(skipped))
	}
	w.complete(t.recs, from, t.head)
}

// next picks the records of the next delivery: the head alone if it was
// handed out before, else the head and the records after it that were
// never handed out, up to the first that was. Done records and held-back
// copies are left out.
func (t *tracked) next() []int {
	idx := append(t.w.bufs.idx[:0], t.head) // reused: a delivery's idx is done with before the next
	if t.st[t.head].attempts == 0 {
		for i := t.head + 1; i < len(t.recs); i++ {
			s := &t.st[i]
			if s.done || s.copyOf > 0 {
				continue
			}
			if s.attempts > 0 {
				break
			}
			idx = append(idx, i)
		}
	}
	t.w.bufs.idx = idx
	return idx
}

// dropDone leaves out of a delivery the records the store reported done
// when it counted the delivery (done elsewhere since the batch was read).
func (t *tracked) dropDone(idx []int) []int {
	out := idx[:0]
	for _, i := range idx {
		if t.st[i].done {
			t.st[i].skip = true
			continue
		}
		out = append(out, i)
	}
	return out
}

// deliver hands the records idx to the handler once and settles the
// outcome: success, rejected records, a partial failure, a permanent
// failure, or a retry after a backoff. It reports false when the worker
// must stop.
func (t *tracked) deliver(idx []int, reason FlushReason) bool {
	w, c, st := t.w, t.w.c, t.st
	b := &Batch{Topic: w.tp.Topic, Partition: w.tp.Partition, Reason: reason, w: w, Attempt: st[idx[0]].attempts}
	b.Records, b.state = w.deliveryBufs(len(idx))
	for k, i := range idx {
		b.Records[k] = t.recs[i]
		b.state[k] = &st[i]
		st[i].rejected = nil
	}
	err := w.call(b)
	if err == nil {
		t.failures = 0
		return t.finish(idx)
	}
	c.stats.handlerErrors.Add(1)
	w.topic.retried.Add(int64(len(idx)))
	if w.ctx.Err() != nil {
		return false
	}
	failed, ferr := -1, err // position in idx of the failing record, if known
	var pe *PartialError
	if errors.As(err, &pe) && pe.Index >= 0 && pe.Index < len(idx) {
		failed, ferr = pe.Index, pe.Err
		// The records before it were handled.
		if !t.finish(idx[:failed]) {
			return false
		}
		// The records after it were not reached: not charged.
		for _, i := range idx[failed+1:] {
			st[i].attempts--
			st[i].uncharged++
		}
		idx = idx[failed:]
	}
	for k, i := range idx {
		st[i].rejected = nil
		if failed < 0 || k == 0 {
			st[i].lastErr = ferr.Error()
		}
	}
	if IsPermanent(ferr) && c.cfg.DeadLetter != nil {
		to := idx // the whole delivery
		if failed >= 0 {
			to = idx[:1]
		}
		for _, i := range to {
			if !w.deadLetter(t.recs[i], &st[i], st[i].attempts, st[i].lastErr) {
				return false
			}
		}
		t.failures = 0
		return true
	}
	t.failures++
	return w.backoff(t.failures+1, err, b)
}

// finish settles records the handler completed: the rejected ones go to
// the dead-letter topic, the others are recorded done (one store round
// trip) and counted as handled.
func (t *tracked) finish(idx []int) bool {
	w, st := t.w, t.st
	handled := 0
	for _, i := range idx {
		if st[i].rejected == nil {
			handled++
		}
	}
	if handled > 0 {
		if !w.c.gate.markDone(w, st, idx) {
			return false
		}
		w.c.stats.records.Add(int64(handled))
		w.topic.handled.Add(int64(handled))
		w.c.stats.batches.Add(1)
		t.settle() // the handled records count for the commit before any dead-letter write
	}
	for _, i := range idx {
		if err := st[i].rejected; err != nil {
			st[i].lastErr = err.Error()
			if !w.deadLetter(t.recs[i], &st[i], st[i].attempts, "rejected: "+st[i].lastErr) {
				return false
			}
			st[i].rejected = nil
		}
	}
	return true
}
