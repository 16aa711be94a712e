package consumer

import (
	"context"
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
// Its goroutine (run) is started by the rebalance bookkeeping and stopped by
// it (drain, cancel); everything the worker registered (its flow share, its
// dedupe lease, its context) is given back when run returns.
type worker struct {
	c      *Consumer
	tp     offsets.Partition
	lease  offsets.Lease // its assignment in the offsets manager
	token  FencingToken  // its ownership's fencing token (Batch.Token); written before run starts
	fp     *flowPart     // its share of the buffer
	ctx    context.Context
	cancel context.CancelFunc
	drain  chan struct{} // closed to ask for a graceful stop (revoke, close)
	done   chan struct{} // closed when run returns
	wake   chan struct{} // capacity 1: records were queued or a flush was asked for
	first  atomic.Int64  // offset of the first record ever queued, -1 before
	gid    uint64        // run's goroutine id, written before run starts handling
	b      *batcher.Batcher[*kgo.Record]

	topic    *topicCounters // its topic's counters
	progress progress       // lag and stall, for Partitions
	loaded   atomic.Bool    // the dedupe state is loaded: the partition is ready

	// keys is the ByKey state of the partition, reseq the Resequence
	// state; both nil with ByPartition. lane is set on the lane workers of
	// a ByKey partition (see newLane), nil on the partition's worker.
	keys         *keyLanes
	reseq        *resequencer
	lane         *keyLanes
	storeRefusal error // the dedupe store's refusal of the last gate call; the worker's goroutine only
	// bufs are the slices of the batch on the tracked path, taken from
	// trackPool for the batch (a handler keeps no Batch after it returns);
	// nil between batches. The worker's goroutine only.
	bufs *trackBufs

	// abandoned is set by the rebalance bookkeeping when the worker did not
	// stop within DrainTimeout after its context was cancelled: nobody
	// waits for it any more.
	abandoned atomic.Bool

	// mu guards the fields below; the poll loop takes it once per partition
	// per poll, the worker once per take.
	mu      sync.Mutex
	queue   [][]*kgo.Record
	stopped bool // set once run stops: enqueue drops what it is given
}

func newWorker(c *Consumer, tp offsets.Partition, lease offsets.Lease) *worker {
	ctx, cancel := context.WithCancel(c.hardCtx)
	b, _ := batcher.New[*kgo.Record](c.cfg.Batch) // policy validated by New
	w := &worker{
		c: c, tp: tp, lease: lease, ctx: ctx, cancel: cancel, b: b,
		drain: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}, 1),
	}
	w.first.Store(-1)
	w.progress.init()
	w.topic = c.topics[tp.Topic]
	w.fp = c.flow.add(tp, w.signal)
	switch c.cfg.Ordering {
	case ByKey:
		w.keys = newKeyLanes(w)
	case Resequence:
		w.reseq = newResequencer(w)
	}
	return w
}

// batches reports whether the worker cuts batches of the partition (in
// partition order) rather than per key or per record (ByKey, Resequence).
func (w *worker) batches() bool { return w.keys == nil && w.reseq == nil }

func (w *worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// enqueue hands a chunk of fetched records to the worker without blocking,
// counting them in the buffer. It reports false if the worker already
// stopped (the records are dropped and left uncommitted for the next owner).
func (w *worker) enqueue(recs []*kgo.Record, bytes int) bool {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return false
	}
	w.c.flow.hold(w.fp, len(recs), bytes)
	if w.first.Load() < 0 {
		w.first.Store(recs[0].Offset)
	}
	if w.reseq != nil {
		w.reseq.submit(recs) // to the Process goroutines at once
	} else {
		w.queue = append(w.queue, recs)
	}
	w.mu.Unlock()
	w.signal()
	return true
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

	if !w.c.gate.assign(w) {
		return
	}
	switch {
	case w.keys != nil:
		w.keys.run()
		return
	case w.reseq != nil:
		w.loaded.Store(true)
		w.reseq.run()
		return
	}
	w.loaded.Store(true)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	for {
		if w.ctx.Err() != nil {
			return
		}
		if w.draining() {
			w.flushAndHandle(w.c.drainReason())
			return
		}
		if chunks := w.takeAll(); len(chunks) > 0 {
			if !w.batch(chunks) {
				return
			}
			continue
		}
		// Nothing queued. The buffer is full and this batch is among the
		// largest open ones, or nothing arrives and MaxWait is off: close
		// it now rather than wait for a timer.
		if reason, ok := w.fp.takeFlush(); ok && w.b.Len() > 0 {
			if !w.flushAndHandle(reason) {
				return
			}
			continue
		}
		// Wait for records, the open batch's deadline, a flush request, a
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

// batch adds the chunks' records to the open batch, handling every batch
// that fills up on the way. It reports false when the worker must stop.
func (w *worker) batch(chunks [][]*kgo.Record) bool {
	now := time.Now()
	for ci, chunk := range chunks {
		for ri, r := range chunk {
			size := recordSize(r)
			if !w.b.Fits(size) {
				if !w.flushAndHandle(FlushBytes) || w.draining() {
					w.dropRest(chunks[ci:], ri)
					return false
				}
			}
			if w.b.Add(now, r, size) {
				reason := FlushRecords
				if w.b.Len() < w.b.Policy().MaxRecords {
					reason = FlushBytes
				}
				if !w.flushAndHandle(reason) || w.draining() {
					w.dropRest(chunks[ci:], ri+1)
					return false
				}
			}
		}
	}
	w.fp.setOpen(w.b.Len(), w.b.Bytes())
	return true
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
	w.c.flow.release(w.fp, n, bytes)
}

// finish runs when the worker stops: whatever it still holds is dropped
// (uncommitted, so the next owner reads it again), its share of the buffer
// released, its dedupe lease given back and its context cancelled, so that
// nothing it registered outlives it.
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
	w.fp.setOpen(0, 0)
	if w.keys != nil {
		w.keys.dropAll()
	}
	if w.reseq != nil {
		w.reseq.dropAll()
	}
	w.c.flow.remove(w.fp)
	w.c.gate.release(w)
	w.cancel()
	w.c.forgetWorker(w)
}

// flushAndHandle hands the open batch to the handler until it succeeds. It
// reports false when the worker must stop: the batch was abandoned because
// the partition is revoked, lost or closing, or it is no longer owned.
func (w *worker) flushAndHandle(reason FlushReason) bool {
	bytes := w.b.Bytes()
	recs := w.b.Flush()
	w.fp.setOpen(0, 0)
	return w.handleBatch(recs, bytes, reason)
}

// handleBatch hands recs (bytes of keys and values) to the handler until they
// are complete, and releases them from the buffer. It reports false when the
// worker must stop.
func (w *worker) handleBatch(recs []*kgo.Record, bytes int, reason FlushReason) bool {
	if len(recs) == 0 {
		return true
	}
	c := w.c
	c.stats.flushes[reason].Add(1)
	now := time.Now()
	c.hist.batchRecords.observe(float64(len(recs)))
	c.hist.batchBytes.observe(float64(bytes))
	if ts := recs[0].Timestamp; !ts.IsZero() {
		c.hist.recordAge.observe(max(now.Sub(ts).Seconds(), 0))
	}
	w.progress.handling(recs[0].Timestamp)
	ok := w.handle(recs, reason)
	c.flow.release(w.fp, len(recs), bytes)
	w.progress.settled(w.fp.held.Load() > 0, recs[len(recs)-1].Timestamp)
	return ok
}

// call runs the handler, turning a panic into a *PanicError.
func (w *worker) call(b *Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	start := time.Now()
	defer func() { w.c.hist.handler.observe(time.Since(start).Seconds()) }()
	return w.c.handler(w.ctx, b)
}
