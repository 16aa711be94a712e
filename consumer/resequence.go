package consumer

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// resequencer is the Resequence ordering of one partition: records are given
// to Concurrency Process goroutines as they arrive (submit, on the poll
// loop's goroutine) and processed in any order; the worker's goroutine takes
// the run of records at the head whose results are ready and hands it to the
// handler as one batch, through the ordinary delivery path, so batches reach
// the handler in offset order and one at a time, as with ByPartition.
//
// Records stay counted in the member's buffer from their arrival until their
// batch is complete, so Process never runs more than MaxBufferedRecords ahead.
//
// Goroutines: run (the worker's goroutine) starts the Process goroutines and
// cancels and waits for them before it returns.
type resequencer struct {
	w     *worker
	avail chan struct{} // capacity Concurrency: records were submitted, or stop

	// mu guards the fields below.
	mu      sync.Mutex
	todo    []*result               // submitted, not taken by a Process goroutine, in offset order
	order   []*result               // submitted, not yet handed to the handler, in offset order
	results map[*kgo.Record]*result // the results of order, for Batch.Result
	stopped bool                    // the worker stops: nothing is taken any more
}

// result is one record's Process outcome.
type result struct {
	rec  *kgo.Record
	done bool // under resequencer.mu
	val  any
	err  error // a Permanent error from Process
}

func newResequencer(w *worker) *resequencer {
	return &resequencer{w: w, avail: make(chan struct{}, w.c.cfg.Concurrency), results: make(map[*kgo.Record]*result)}
}

// submit queues the records for Process. Poll loop, under the worker's lock.
func (r *resequencer) submit(recs []*kgo.Record) {
	r.mu.Lock()
	for _, rec := range recs {
		res := &result{rec: rec}
		r.todo = append(r.todo, res)
		r.order = append(r.order, res)
		r.results[rec] = res
	}
	r.mu.Unlock()
	for range min(len(recs), cap(r.avail)) {
		select {
		case r.avail <- struct{}{}:
		default:
		}
	}
}

// run is the worker's goroutine with Resequence.
func (r *resequencer) run() {
	w := r.w
	var wg sync.WaitGroup
	for range w.c.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gid := goid()
			w.c.handlerGoroutines.Store(gid, w)
			defer w.c.handlerGoroutines.Delete(gid)
			r.process()
		}()
	}
	defer func() {
		r.mu.Lock()
		r.stopped = true
		r.mu.Unlock()
		w.cancel() // a Process call in flight is of no use any more
		wg.Wait()
	}()
	for {
		if w.ctx.Err() != nil {
			return
		}
		if w.draining() {
			// Hand over what is ready; the rest is for the next owner.
			for {
				recs, bytes := r.takeReady()
				if len(recs) == 0 {
					return
				}
				ok := w.handleBatch(recs, bytes, w.c.drainReason())
				r.forget(recs)
				if !ok {
					return
				}
			}
		}
		if recs, bytes := r.takeReady(); len(recs) > 0 {
			ok := w.handleBatch(recs, bytes, FlushReady)
			r.forget(recs)
			if !ok {
				return
			}
			continue
		}
		select {
		case <-w.wake:
		case <-w.drain:
		case <-w.ctx.Done():
		}
	}
}

// takeReady removes the run of records at the head whose results are ready,
// up to Batch.MaxRecords and MaxBytes.
func (r *resequencer) takeReady() ([]*kgo.Record, int) {
	pol := r.w.c.cfg.Batch
	r.mu.Lock()
	defer r.mu.Unlock()
	n, bytes := 0, 0
	for n < len(r.order) && n < pol.MaxRecords && r.order[n].done {
		size := recordSize(r.order[n].rec)
		if n > 0 && pol.MaxBytes > 0 && bytes+size > pol.MaxBytes {
			break
		}
		bytes += size
		n++
	}
	if n == 0 {
		return nil, 0
	}
	recs := make([]*kgo.Record, n)
	for i := range n {
		recs[i] = r.order[i].rec
	}
	r.order = r.order[n:]
	return recs, bytes
}

// forget drops the results of records handed to the handler.
func (r *resequencer) forget(recs []*kgo.Record) {
	r.mu.Lock()
	for _, rec := range recs {
		delete(r.results, rec)
	}
	r.mu.Unlock()
}

// result returns rec's Process result; ok is false when rec is not a record
// of this partition waiting for the handler.
func (r *resequencer) result(rec *kgo.Record) (val any, err error, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.results[rec]
	if !ok || !res.done {
		return nil, nil, false
	}
	return res.val, res.err, true
}

// process is one Process goroutine: it takes the oldest submitted record,
// runs Process until it succeeds or fails permanently, and wakes the worker.
func (r *resequencer) process() {
	w := r.w
	for {
		r.mu.Lock()
		if r.stopped {
			r.mu.Unlock()
			return
		}
		var res *result
		if len(r.todo) > 0 {
			res = r.todo[0]
			r.todo[0] = nil
			r.todo = r.todo[1:]
		}
		r.mu.Unlock()
		if res == nil {
			select {
			case <-r.avail:
			case <-w.ctx.Done():
				return
			}
			continue
		}
		val, err, ok := r.processOne(res.rec)
		if !ok {
			return // cancelled or draining: the record is left to the next owner
		}
		r.mu.Lock()
		res.val, res.err, res.done = val, err, true
		r.mu.Unlock()
		w.signal()
	}
}

// processOne runs Process on rec until it succeeds or returns a Permanent
// error, waiting with Retry's backoff between attempts. ok is false when the
// worker stops first.
func (r *resequencer) processOne(rec *kgo.Record) (val any, err error, ok bool) {
	w := r.w
	for attempt := 1; ; attempt++ {
		val, err = r.call(w.ctx, rec)
		if err == nil || IsPermanent(err) {
			return val, err, true
		}
		if w.ctx.Err() != nil {
			return nil, nil, false
		}
		w.c.stats.handlerErrors.Add(1)
		wait := backoff(w.c.cfg.Retry, attempt)
		w.c.sampler.log(w.c.cfg.Logger, slog.LevelWarn, "process "+w.tp.String(), "kbatch: Process failed, retrying",
			"partition", w.tp.String(), "offset", rec.Offset, "attempt", attempt, "retry_in", wait, "err", err)
		if !w.sleep(wait) {
			return nil, nil, false
		}
	}
}

// call runs Process, turning a panic into a *PanicError.
func (r *resequencer) call(ctx context.Context, rec *kgo.Record) (val any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	return r.w.c.cfg.Process(ctx, rec)
}

// dropAll gives back the buffer's room of every record not handed to the
// handler. Called by finish, once the Process goroutines returned.
func (r *resequencer) dropAll() {
	r.mu.Lock()
	n, bytes := len(r.order), 0
	for _, res := range r.order {
		bytes += recordSize(res.rec)
	}
	r.order, r.todo = nil, nil
	r.results = make(map[*kgo.Record]*result)
	r.mu.Unlock()
	r.w.c.flow.release(r.w.fp, n, bytes)
}

// Result returns the result of Config.Process for b.Records[i] with the
// Resequence ordering: its value, or the Permanent error Process returned
// for it. With another ordering, or in a batch made by NewTestBatch, it
// returns nil, nil.
func (b *Batch) Result(i int) (any, error) {
	if b.w == nil || b.w.reseq == nil {
		return nil, nil
	}
	val, err, _ := b.w.reseq.result(b.Records[i])
	return val, err
}
