package consumer

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/offsets"
)

// keyLanes is the ByKey ordering of one partition: its worker's goroutine
// dispatches the records, in offset order, to one queue per key, and
// Concurrency lane goroutines take batches from the keys that have records
// and no batch in flight, oldest first. A key is in at most one batch at a
// time and its records leave its queue in offset order, so the records of one
// key reach the handler in offset order and a record is never passed by a
// later one of its key, whatever the others do.
//
// Each record is begun in the offsets manager on its own as it is dispatched
// (the records of a batch are not contiguous) and completed on its own. A
// record's place in the member's buffer is given back only when the
// watermark passes it, so records completed beyond the watermark still count
// against MaxBufferedRecords: a key held back by a failing record stops the
// partition at its share of the buffer, never grows memory.
//
// Goroutines: run (the worker's goroutine) starts the lanes and waits for
// them before it returns; each lane stops after its batch in flight when the
// worker drains, is cancelled, or stopped.
type keyLanes struct {
	w     *worker
	avail chan struct{} // capacity Concurrency: a key became ready, or stop

	// skip lists the records completed beyond the committed offset by an
	// earlier owner (the commit metadata): they complete unhandled. Worker
	// goroutine only.
	skip []offsets.Range

	// mu guards the fields below; the lanes and the worker's goroutine take
	// it briefly, never while calling out.
	mu      sync.Mutex
	keys    map[string]*keyQueue
	ready   readyKeys // keys with records and no batch in flight, oldest head first
	held    []heldRec // records begun and still counted in the buffer, in offset order
	stopped bool      // the lanes stop (drain, cancel, a lane that had to): no batch is taken any more
	wm      int64     // the highest watermark published to progress

	fetchErrors atomic.Int64 // failed reads of the committed offset
}

// keyQueue is the records of one key not yet handed to a lane.
type keyQueue struct {
	key   string
	recs  []*kgo.Record
	busy  bool // a batch of the key is in flight
	index int  // in ready, -1 when not there
}

// heldRec is a record begun and counted in the buffer.
type heldRec struct {
	offset int64
	size   int
	ts     time.Time
}

func newKeyLanes(w *worker) *keyLanes {
	return &keyLanes{w: w, avail: make(chan struct{}, w.c.cfg.Concurrency), keys: make(map[string]*keyQueue)}
}

// newLane is a worker value for one lane: the partition's identity, context
// and drain signal, so that the delivery path (retries, dedupe, dead letters)
// runs on it unchanged, with completions routed to the lanes (complete).
func (k *keyLanes) newLane() *worker {
	w := k.w
	return &worker{c: w.c, tp: w.tp, lease: w.lease, fp: w.fp, ctx: w.ctx, cancel: w.cancel,
		drain: w.drain, topic: w.topic, lane: k}
}

// partitionWorker is the worker of w's partition: w itself, or for a lane
// the worker whose lanes it is.
func (w *worker) partitionWorker() *worker {
	if w.lane != nil {
		return w.lane.w
	}
	return w
}

// run is the worker's goroutine with ByKey: it starts the lanes, loads the
// records completed beyond the committed offset before it dispatches the
// first records, dispatches records until the worker drains, is cancelled or
// a lane stops, then waits for the lanes.
//
// The load waits for the first records because they come from the poll loop,
// which runs in Run: the client a worker started by an early assignment would
// otherwise use may not be published yet (kgo joins the group from
// kgo.NewClient on).
func (k *keyLanes) run() {
	w := k.w
	w.loaded.Store(true)
	loaded := false
	var wg sync.WaitGroup
	for range w.c.cfg.Concurrency {
		lane := k.newLane()
		wg.Add(1)
		go func() {
			defer wg.Done()
			gid := goid()
			w.c.handlerGoroutines.Store(gid, w)
			defer w.c.handlerGoroutines.Delete(gid)
			k.lane(lane)
		}()
	}
	defer wg.Wait()
	for {
		if w.ctx.Err() != nil || w.draining() || k.isStopped() {
			k.stop()
			return
		}
		if chunks := w.takeAll(); len(chunks) > 0 {
			if !loaded {
				if !k.loadCompleted() {
					w.dropRest(chunks, 0)
					k.stop()
					return
				}
				loaded = true
			}
			if !k.dispatch(chunks) {
				k.stop()
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

// stop makes the lanes stop after their batch in flight.
func (k *keyLanes) stop() {
	k.mu.Lock()
	k.stopped = true
	k.mu.Unlock()
	for range cap(k.avail) {
		select {
		case k.avail <- struct{}{}:
		default:
		}
	}
}

func (k *keyLanes) isStopped() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stopped
}

// dispatch begins the chunks' records one by one and queues each on its
// key; records named by the commit metadata complete unhandled. It reports
// false when the worker must stop (the partition is no longer owned).
func (k *keyLanes) dispatch(chunks [][]*kgo.Record) bool {
	w := k.w
	for ci, chunk := range chunks {
		for ri, r := range chunk {
			if err := w.c.offsets.BeginLeased(w.tp, w.lease, r.Offset, r.Offset, r.LeaderEpoch); err != nil {
				w.c.cfg.Logger.Warn("kbatch: record not begun, stopping partition", "partition", w.tp.String(), "err", err)
				w.dropRest(chunks[ci:], ri)
				return false
			}
			skip := k.skips(r.Offset)
			k.mu.Lock()
			k.held = append(k.held, heldRec{offset: r.Offset, size: recordSize(r), ts: r.Timestamp})
			if !skip {
				k.queueLocked(r)
			}
			k.mu.Unlock()
			if skip {
				w.c.stats.skipped.Add(1)
				w.topic.skipped.Add(1)
				k.complete([]*kgo.Record{r})
			}
		}
	}
	return true
}

// skips reports whether offset was completed by an earlier owner. Offsets
// come in increasing order. Worker goroutine only.
func (k *keyLanes) skips(offset int64) bool {
	for len(k.skip) > 0 && k.skip[0].Last < offset {
		k.skip = k.skip[1:]
	}
	return len(k.skip) > 0 && k.skip[0].First <= offset
}

// queueLocked appends r to its key's queue and makes the key ready if it has
// no batch in flight. k.mu must be held.
func (k *keyLanes) queueLocked(r *kgo.Record) {
	key := string(r.Key)
	q := k.keys[key]
	if q == nil {
		q = &keyQueue{key: key, index: -1}
		k.keys[key] = q
	}
	q.recs = append(q.recs, r)
	if !q.busy && q.index < 0 {
		heap.Push(&k.ready, q)
		select {
		case k.avail <- struct{}{}:
		default: // every lane has a wake-up pending already
		}
	}
}

// lane is one lane goroutine: it takes the oldest ready key's records as a
// batch, delivers it, and gives the key back.
func (k *keyLanes) lane(lw *worker) {
	w := k.w
	for {
		if w.ctx.Err() != nil || w.draining() {
			return
		}
		q, recs, bytes, ok := k.take()
		if !ok {
			return
		}
		if q == nil {
			select {
			case <-k.avail:
			case <-w.drain:
			case <-w.ctx.Done():
			}
			continue
		}
		c := w.c
		c.stats.flushes[FlushReady].Add(1)
		c.hist.batchRecords.observe(float64(len(recs)))
		c.hist.batchBytes.observe(float64(bytes))
		if ts := recs[0].Timestamp; !ts.IsZero() {
			c.hist.recordAge.observe(max(time.Since(ts).Seconds(), 0))
		}
		delivered := lw.deliver(recs, FlushReady)
		k.give(q, len(recs), delivered)
		if !delivered {
			k.stop()
			w.signal()
			return
		}
	}
}

// take removes the oldest ready key from the ready set and returns its
// records up to Batch.MaxRecords and MaxBytes; the key is busy until give.
// q is nil when no key is ready; ok is false when the lanes must stop.
func (k *keyLanes) take() (q *keyQueue, recs []*kgo.Record, bytes int, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return nil, nil, 0, false
	}
	if k.ready.Len() == 0 {
		return nil, nil, 0, true
	}
	q = heap.Pop(&k.ready).(*keyQueue)
	pol := k.w.c.cfg.Batch
	n := 0
	for n < len(q.recs) && n < pol.MaxRecords {
		size := recordSize(q.recs[n])
		if n > 0 && pol.MaxBytes > 0 && bytes+size > pol.MaxBytes {
			break
		}
		bytes += size
		n++
	}
	recs = q.recs[:n:n]
	q.recs = q.recs[n:]
	q.busy = true
	return q, recs, bytes, true
}

// give ends q's batch of n records. When the batch was delivered, the key is
// ready again if it has records, or forgotten. When it was not (the lane
// stops), the key stays busy: none of its later records may pass the ones
// not completed.
func (k *keyLanes) give(q *keyQueue, n int, delivered bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !delivered {
		return
	}
	q.busy = false
	switch {
	case len(q.recs) > 0:
		heap.Push(&k.ready, q)
		select {
		case k.avail <- struct{}{}:
		default:
		}
	default:
		delete(k.keys, q.key)
	}
}

// complete marks the records complete one by one (they are not contiguous)
// and gives back the buffer's room of every record the watermark passed.
// Lanes and the worker's goroutine call it.
func (k *keyLanes) complete(recs []*kgo.Record) {
	w := k.w
	var wm offsets.Offset
	moved := false
	for _, r := range recs {
		at, m, err := w.c.offsets.DoneLeased(w.tp, w.lease, r.Offset, r.Offset, 1)
		if err != nil {
			w.c.cfg.Logger.Error("kbatch: completing records", "partition", w.tp.String(), "err", err)
			continue
		}
		if m {
			wm, moved = at, true
		}
	}
	if !moved {
		return
	}
	k.mu.Lock()
	if wm.At <= k.wm {
		k.mu.Unlock()
		return // a lane completing at the same time published a later one
	}
	k.wm = wm.At
	n, bytes := 0, 0
	for n < len(k.held) && k.held[n].offset < wm.At {
		bytes += k.held[n].size
		n++
	}
	k.held = k.held[n:]
	var oldest time.Time
	if len(k.held) > 0 {
		oldest = k.held[0].ts
	}
	left := len(k.held) > 0
	w.progress.advanced(wm.At, time.Now())
	w.progress.settled(left, oldest)
	k.mu.Unlock()
	w.c.flow.release(w.fp, n, bytes)
}

// dropAll gives back the buffer's room of every record still held: the
// worker stops, what did not complete stays uncommitted for the next owner.
// Called by finish, once the lanes returned.
func (k *keyLanes) dropAll() {
	k.mu.Lock()
	n, bytes := len(k.held), 0
	for _, h := range k.held {
		bytes += h.size
	}
	k.held = nil
	k.keys = make(map[string]*keyQueue)
	k.ready = nil
	k.mu.Unlock()
	k.w.c.flow.release(k.w.fp, n, bytes)
}

// loadCompleted reads the partition's committed offset and metadata and
// keeps the records it names as completed beyond that offset, so that they
// are not handled again. Metadata that is not kbatch's, of an unknown
// version or malformed is logged and ignored: everything beyond the committed
// offset is then handled again. It reports false when the worker must stop.
func (k *keyLanes) loadCompleted() bool {
	w := k.w
	if w.c.cfg.StartOffsets != nil {
		// The sink says where partitions start, not Kafka's committed
		// offset: the metadata beside that offset is not trusted either.
		return true
	}
	var committed int64 = -1
	var meta string
	ok := w.retry("committed offset fetch", &k.fetchErrors, nil, func() error {
		var err error
		committed, meta, err = w.c.fetchCommitted(w.ctx, w.tp)
		return err
	})
	if !ok {
		return false
	}
	if committed < 0 || meta == "" {
		return true
	}
	done, err := offsets.DecodeCompleted(committed, meta)
	if errors.Is(err, offsets.ErrForeignMetadata) {
		// kgo commits its member id as metadata; another client its own.
		w.c.cfg.Logger.Debug("kbatch: commit metadata not kbatch's, the records beyond the committed offset are handled again",
			"partition", w.tp.String(), "offset", committed)
		return true
	}
	if err != nil {
		w.c.cfg.Logger.Warn("kbatch: commit metadata ignored, the records beyond the committed offset are handled again",
			"partition", w.tp.String(), "offset", committed, "err", err)
		return true
	}
	k.skip = done
	return true
}

// fetchCommitted reads tp's committed offset and its metadata (offset -1
// when none is committed).
func (c *Consumer) fetchCommitted(ctx context.Context, tp offsets.Partition) (int64, string, error) {
	req := kmsg.NewPtrOffsetFetchRequest()
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = c.cfg.Group
	t := kmsg.NewOffsetFetchRequestGroupTopic()
	t.Topic = tp.Topic
	t.Partitions = []int32{tp.Partition}
	g.Topics = append(g.Topics, t)
	req.Groups = append(req.Groups, g)
	req.RequireStable = true
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return -1, "", err
	}
	for _, rg := range resp.Groups {
		if err := kerr.ErrorForCode(rg.ErrorCode); err != nil {
			return -1, "", err
		}
		for _, rt := range rg.Topics {
			if rt.Topic != tp.Topic {
				continue
			}
			for _, rp := range rt.Partitions {
				if rp.Partition != tp.Partition {
					continue
				}
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					return -1, "", err
				}
				meta := ""
				if rp.Metadata != nil {
					meta = *rp.Metadata
				}
				return rp.Offset, meta, nil
			}
		}
	}
	return -1, "", errors.New("committed offset fetch: partition missing from the response")
}

// readyKeys is a heap of keys by the offset of their first queued record.
type readyKeys []*keyQueue

func (h readyKeys) Len() int           { return len(h) }
func (h readyKeys) Less(i, j int) bool { return h[i].recs[0].Offset < h[j].recs[0].Offset }
func (h readyKeys) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *readyKeys) Push(x any) {
	q := x.(*keyQueue)
	q.index = len(*h)
	*h = append(*h, q)
}
func (h *readyKeys) Pop() any {
	old := *h
	q := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	q.index = -1
	return q
}
