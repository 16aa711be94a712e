package consumer

import (
	"context"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/offsets"
)

// worker owns one assigned partition: it cuts the partition's records into
// batches and hands them to the handler one after another, in offset order.
// Its goroutine (run) is started by the assign callback and waited for by the
// revoke or lost callback, or by Run on close (through Consumer.workers).
type worker struct {
	c      *Consumer
	tp     offsets.Partition
	ctx    context.Context // the handler's context
	cancel context.CancelFunc
	drain  chan struct{} // closed to ask for a graceful stop (revoke, close)
	done   chan struct{} // closed when run returns
	wake   chan struct{} // capacity 1: records were queued
	first  atomic.Int64  // offset of the first record ever queued, -1 before
	b      *batcher.Batcher[*kgo.Record]

	// mu guards the fields below; the poll loop takes it once per partition
	// per poll, the worker once per chunk and once per batch.
	mu        sync.Mutex
	queue     [][]*kgo.Record
	heldRecs  int // records queued, batching or in the handler
	heldBytes int
	paused    bool
	stopped   bool // set once run returns: enqueue drops what it is given
}

func newWorker(c *Consumer, tp offsets.Partition) *worker {
	ctx, cancel := context.WithCancel(c.hardCtx)
	b, _ := batcher.New[*kgo.Record](c.cfg.Batch) // policy validated by New
	w := &worker{
		c: c, tp: tp, ctx: ctx, cancel: cancel, b: b,
		drain: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}, 1),
	}
	w.first.Store(-1)
	return w
}

// enqueue hands a chunk of fetched records to the worker without blocking.
// It reports false if the worker already stopped (the records are dropped and
// left uncommitted for the next owner).
func (w *worker) enqueue(recs []*kgo.Record, bytes int) bool {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return false
	}
	if w.first.Load() < 0 {
		w.first.Store(recs[0].Offset)
	}
	w.queue = append(w.queue, recs)
	w.heldRecs += len(recs)
	w.heldBytes += bytes
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

// release forgets n records of size bytes that left memory (handled or
// dropped), resumes fetching once the worker is down to half its share, and
// wakes the poll loop if it waits for room.
func (w *worker) release(n, bytes int) {
	if n == 0 {
		return
	}
	w.mu.Lock()
	w.heldRecs -= n
	w.heldBytes -= bytes
	if w.paused && !w.stopped {
		limitRecs, limitBytes := w.c.partitionLimits()
		if w.heldRecs <= limitRecs/2 && w.heldBytes <= limitBytes/2 {
			w.paused = false
			w.c.cl.ResumeFetchPartitions(map[string][]int32{w.tp.Topic: {w.tp.Partition}})
		}
	}
	w.mu.Unlock()
	w.c.releaseBuffered(n, bytes)
}

// pauseIfOver pauses the partition's fetching if the worker holds more than
// its share of the buffer bounds.
func (w *worker) pauseIfOver(limitRecs, limitBytes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.paused || w.stopped || (w.heldRecs < limitRecs && w.heldBytes < limitBytes) {
		return
	}
	w.paused = true
	w.c.cl.PauseFetchPartitions(map[string][]int32{w.tp.Topic: {w.tp.Partition}})
	w.c.stats.pauses.Add(1)
}

// takeAll removes every queued chunk.
func (w *worker) takeAll() [][]*kgo.Record {
	w.mu.Lock()
	defer w.mu.Unlock()
	q := w.queue
	w.queue = nil
	return q
}

func (w *worker) draining() bool {
	select {
	case <-w.drain:
		return true
	default:
		return false
	}
}

// run is the worker's goroutine.
func (w *worker) run() {
	defer close(w.done)
	defer w.finish()

	if !w.assignStore() {
		return
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	for {
		if w.ctx.Err() != nil {
			return
		}
		if w.draining() {
			w.flushAndHandle(FlushDrain)
			return
		}
		if chunks := w.takeAll(); len(chunks) > 0 {
			now := time.Now()
			for ci, chunk := range chunks {
				for ri, r := range chunk {
					size := recordSize(r)
					if !w.b.Fits(size) {
						if !w.flushAndHandle(FlushBytes) || w.draining() {
							w.dropRest(chunks[ci:], ri)
							return
						}
					}
					if w.b.Add(now, r, size) {
						reason := FlushRecords
						if w.b.Len() < w.b.Policy().MaxRecords {
							reason = FlushBytes
						}
						if !w.flushAndHandle(reason) || w.draining() {
							w.dropRest(chunks[ci:], ri+1)
							return
						}
					}
				}
			}
			continue
		}
		// Nothing queued: wait for records, the open batch's deadline, a
		// drain or a cancel.
		var timerC <-chan time.Time
		if deadline, ok := w.b.Deadline(); ok {
			d := time.Until(deadline)
			if d <= 0 {
				if !w.flushAndHandle(FlushWait) {
					return
				}
				continue
			}
			timer.Reset(d)
			timerC = timer.C
		}
		select {
		case <-w.wake:
		case <-timerC:
			if !w.flushAndHandle(FlushWait) {
				return
			}
		case <-w.drain:
		case <-w.ctx.Done():
		}
		if timerC != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// dropRest releases the records of chunks not yet batched, starting at
// chunks[0][from].
func (w *worker) dropRest(chunks [][]*kgo.Record, from int) {
	n, bytes := 0, 0
	for i, chunk := range chunks {
		if i == 0 {
			chunk = chunk[from:]
		}
		for _, r := range chunk {
			n++
			bytes += recordSize(r)
		}
	}
	w.release(n, bytes)
}

// finish runs when the worker stops: whatever it still holds is dropped
// (uncommitted, so the next owner reads it again) and its share is released.
func (w *worker) finish() {
	w.mu.Lock()
	w.stopped = true
	q := w.queue
	w.queue = nil
	w.mu.Unlock()
	w.dropRest(q, 0)
	if recs := w.b.Flush(); len(recs) > 0 {
		w.dropRest([][]*kgo.Record{recs}, 0)
	}
	if d := w.c.cfg.Dedupe; d != nil {
		w.c.mu.Lock()
		successor := w.c.workers[w.tp]
		w.c.mu.Unlock()
		if successor == nil || successor == w {
			d.Store.Release(w.tp)
		}
	}
}

// assignStore loads the partition's dedupe state before its first batch,
// retrying a failing store. It reports false when the worker must stop.
func (w *worker) assignStore() bool {
	d := w.c.cfg.Dedupe
	if d == nil {
		return true
	}
	for attempt := 1; ; attempt++ {
		err := d.Store.Assign(w.ctx, w.tp)
		if err == nil {
			return true
		}
		if !w.storeFailed("assign", err, attempt) {
			return false
		}
	}
}

// flushAndHandle hands the open batch to the handler until it succeeds. It
// reports false when the worker must stop: the batch was abandoned because
// the partition is revoked, lost or closing, or it is no longer owned.
func (w *worker) flushAndHandle(reason FlushReason) bool {
	bytes := w.b.Bytes()
	recs := w.b.Flush()
	if len(recs) == 0 {
		return true
	}
	ok := w.handle(recs, reason)
	w.release(len(recs), bytes)
	return ok
}

// call runs the handler, turning a panic into a *PanicError.
func (w *worker) call(b *Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return w.c.handler(w.ctx, b)
}

// backoff is Initial doubled per failed attempt, capped at Max, with ±20%
// jitter so that partitions failing together do not retry in lockstep.
func backoff(r Retry, attempt int) time.Duration {
	d := r.Initial
	for i := 1; i < attempt && d < r.Max; i++ {
		d *= 2
	}
	if d > r.Max {
		d = r.Max
	}
	jitter := time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	return d + jitter
}
