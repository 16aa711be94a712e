package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/offsets"
)

// gate is the dedupe gate: the one place that talks to the dedupe store. It
// loads a partition's state when a worker starts (assign) and gives it back
// when the worker stops (release), reads and counts deliveries (lookup,
// begin), records progress (mark) and completion (markDone). Without Dedupe
// the same calls keep the counts in memory.
type gate struct {
	cfg   *Dedupe            // nil without Dedupe
	offs  dedupe.OffsetStore // cfg.Store if it takes fallback keys by offset, else nil
	stats *counters

	// mu guards leases. A partition's lease serializes its store Assign
	// and Release calls and names the worker that holds it, so that a slow
	// worker of an earlier assignment can never Release the partition
	// after its successor's Assign.
	mu     sync.Mutex
	leases map[offsets.Partition]*storeLease
}

type storeLease struct {
	mu     sync.Mutex // held across the store's Assign and Release calls
	holder *worker    // under mu
}

func newGate(cfg *Dedupe, stats *counters) *gate {
	g := &gate{cfg: cfg, stats: stats, leases: make(map[offsets.Partition]*storeLease)}
	if cfg != nil {
		g.offs, _ = cfg.Store.(dedupe.OffsetStore)
	}
	return g
}

// gateBufs are the slices of a batch's gate calls (part of the worker's
// trackBufs): the worker's goroutine only.
type gateBufs struct {
	keys    []string
	offs    []int64
	entries []dedupe.Entry
}

// callKeys returns the keys of the records st[i] for i in idx (every
// record of st when idx is nil), leaving out those skip reports, in the
// worker's reused slices: for an OffsetStore, "" and the offset for a
// record whose key is its fallback key. The slices hold until the next
// callKeys.
func (g *gate) callKeys(w *worker, st []recState, idx []int, skip func(*recState) bool) ([]string, []int64) {
	b := &w.bufs.gate
	n := len(idx)
	if idx == nil {
		n = len(st)
	}
	keys, offs := b.keys[:0], b.offs[:0]
	if cap(keys) < n {
		keys = make([]string, 0, n)
	}
	if g.offs != nil && cap(offs) < n {
		offs = make([]int64, 0, n)
	}
	for j := range n {
		s := &st[j]
		if idx != nil {
			s = &st[idx[j]]
		}
		if skip != nil && skip(s) {
			continue
		}
		keys = append(keys, s.key) // "" when byOffset, which only an OffsetStore gets
		if g.offs != nil {
			offs = append(offs, s.off)
		}
	}
	b.keys, b.offs = keys, offs
	return keys, offs
}

// entriesFor returns the worker's reused slice of n entries, zeroed.
func (b *gateBufs) entriesFor(n int) []dedupe.Entry {
	if cap(b.entries) < n {
		b.entries = make([]dedupe.Entry, n)
	}
	b.entries = b.entries[:n]
	clear(b.entries)
	return b.entries
}

// lookupCall is Lookup, through LookupOffsets for an OffsetStore.
func (g *gate) lookupCall(w *worker, keys []string, offs []int64) ([]dedupe.Entry, error) {
	if g.offs == nil {
		return g.cfg.Store.Lookup(w.ctx, w.tp, keys)
	}
	out := w.bufs.gate.entriesFor(len(keys))
	return out, g.offs.LookupOffsets(w.ctx, w.tp, keys, offs, out)
}

// beginCall is Begin, through BeginOffsets for an OffsetStore.
func (g *gate) beginCall(w *worker, keys []string, offs []int64) ([]dedupe.Entry, error) {
	if g.offs == nil {
		return g.cfg.Store.Begin(w.ctx, w.tp, keys)
	}
	out := w.bufs.gate.entriesFor(len(keys))
	return out, g.offs.BeginOffsets(w.ctx, w.tp, keys, offs, out)
}

// doneCall is Done, through DoneOffsets for an OffsetStore.
func (g *gate) doneCall(w *worker, keys []string, offs []int64) error {
	if g.offs == nil {
		return g.cfg.Store.Done(w.ctx, w.tp, keys)
	}
	return g.offs.DoneOffsets(w.ctx, w.tp, keys, offs)
}

func (g *gate) lease(tp offsets.Partition) *storeLease {
	g.mu.Lock()
	defer g.mu.Unlock()
	l := g.leases[tp]
	if l == nil {
		l = &storeLease{}
		g.leases[tp] = l
	}
	return l
}

// refuses reports whether a store error means the store will not serve the
// partition to this worker: retrying the call cannot help.
func refuses(err error) bool {
	return errors.Is(err, dedupe.ErrFenced) || errors.Is(err, dedupe.ErrNotAssigned) || errors.Is(err, dedupe.ErrClosed)
}

// refused is the refusal test of the gate's calls: it remembers the
// refusal on the worker, for recover.
func (w *worker) refused(err error) bool {
	if !refuses(err) {
		return false
	}
	w.storeRefusal = err
	return true
}

// assign loads the partition's dedupe state before the worker's first batch,
// retrying a failing store. It reports false when the worker must stop. A
// closed store stops Run: no partition can be served any more.
func (g *gate) assign(w *worker) bool {
	if g.cfg == nil {
		return true
	}
	l := g.lease(w.tp)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holder = w.partitionWorker() // a ByKey lane claims for its partition's worker, which releases
	closed := func(err error) bool {
		if !errors.Is(err, dedupe.ErrClosed) {
			return false
		}
		w.c.fail(fmt.Errorf("kbatch: dedupe store closed while %s was being assigned: %w", w.tp, err))
		return true
	}
	return w.retry("dedupe store assign", &g.stats.storeErrors, closed, func() error {
		return g.cfg.Store.Assign(w.ctx, w.tp)
	})
}

// release gives the partition's dedupe state back, unless a newer worker of
// the partition holds it already.
func (g *gate) release(w *worker) {
	if g.cfg == nil {
		return
	}
	l := g.lease(w.tp)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder != w {
		return
	}
	l.holder = nil
	g.cfg.Store.Release(w.tp)
}

// recover runs after a gate call failed. If the store refused the partition
// with ErrFenced or ErrNotAssigned (another store claimed it, or it was
// released under the worker), the worker claims it again and reports true:
// the caller starts its batch over from the first record not complete,
// reading the store afresh, so nothing is skipped that is not done. The
// event is logged and counted (Stats.StoreReassigns). A closed store stops
// Run. Any other failure (cancelled, draining) reports false.
func (g *gate) recover(w *worker) bool {
	err := w.storeRefusal
	w.storeRefusal = nil
	if err == nil || w.ctx.Err() != nil || w.draining() {
		return false
	}
	if errors.Is(err, dedupe.ErrClosed) {
		w.c.fail(fmt.Errorf("kbatch: dedupe store closed while %s was being consumed: %w", w.tp, err))
		return false
	}
	g.stats.storeReassigns.Add(1)
	w.c.sampler.log(w.c.cfg.Logger, slog.LevelWarn, "reassign "+w.tp.String(),
		"kbatch: dedupe store refused the partition; claiming it again and starting the batch over from its first record not complete",
		"partition", w.tp.String(), "err", err)
	if !w.sleep(backoff(w.c.cfg.Retry, 1)) {
		return false
	}
	return g.assign(w)
}

// lookup reads the store's entries for the records: attempts so far, markers
// and done. It retries a failing store and reports false when the worker
// must stop.
func (g *gate) lookup(w *worker, st []recState) bool {
	keys, offs := g.callKeys(w, st, nil, nil)
	return w.retry("dedupe store lookup", &g.stats.storeErrors, w.refused, func() error {
		entries, err := g.lookupCall(w, keys, offs)
		if err != nil {
			return err
		}
		if len(entries) != len(keys) {
			return fmt.Errorf("store returned %d entries for %d keys", len(entries), len(keys))
		}
		for i, e := range entries {
			st[i].attempts, st[i].done, st[i].skip = e.Attempts, e.Done, e.Done
			if e.Markers != nil || st[i].markers != nil { // no pointer written (and no write barrier) for none
				st[i].markers = e.Markers
			}
		}
		return nil
	})
}

// begin counts one delivery of the records st[i] for i in idx: durably in
// one store round trip with Dedupe, in memory without. Their keys are
// distinct (copies are held back). A record the store reports done is
// marked done (the caller leaves it out of the delivery). It retries a
// failing store and reports false when the worker must stop.
func (g *gate) begin(w *worker, st []recState, idx []int) bool {
	if g.cfg == nil {
		for _, i := range idx {
			st[i].attempts++
		}
		return true
	}
	keys, offs := g.callKeys(w, st, idx, nil)
	return w.retry("dedupe store begin", &g.stats.storeErrors, w.refused, func() error {
		entries, err := g.beginCall(w, keys, offs)
		if err != nil {
			return err
		}
		if len(entries) != len(keys) {
			return fmt.Errorf("store returned %d entries for %d keys", len(entries), len(keys))
		}
		for k, e := range entries {
			s := &st[idx[k]]
			// Deliveries that did not reach the record (it came after
			// the index of a FailedAt) are not its attempts.
			s.attempts, s.done = max(e.Attempts-s.uncharged, 1), e.Done
			if e.Markers != nil || s.markers != nil {
				s.markers = e.Markers
			}
		}
		return nil
	})
}

// markDone records the records st[i] for i in idx done in the store (one
// round trip), leaving out those already done and those the handler
// rejected (the dead-letter path records them).
func (g *gate) markDone(w *worker, st []recState, idx []int) bool {
	if g.cfg != nil {
		keys, offs := g.callKeys(w, st, idx, func(s *recState) bool { return s.done || s.rejected != nil })
		if len(keys) > 0 {
			ok := w.retry("dedupe store done", &g.stats.storeErrors, w.refused, func() error {
				return g.doneCall(w, keys, offs)
			})
			if !ok {
				return false
			}
		}
	}
	for _, i := range idx {
		if st[i].rejected == nil {
			st[i].done = true
		}
	}
	return true
}

// markOneDone records one record done (after it was dead-lettered).
func (g *gate) markOneDone(w *worker, s *recState) bool {
	if g.cfg != nil && !s.done {
		keys := []string{s.keyIn(w.tp.Topic, w.tp.Partition)}
		ok := w.retry("dedupe store done", &g.stats.storeErrors, w.refused, func() error {
			return g.cfg.Store.Done(w.ctx, w.tp, keys)
		})
		if !ok {
			return false
		}
	}
	s.done = true
	return true
}

// mark writes a marker durably (with Dedupe) for the handler's Batch.Mark.
func (g *gate) mark(ctx context.Context, tp offsets.Partition, key, marker string) error {
	if g.cfg == nil {
		return nil
	}
	return g.cfg.Store.Mark(ctx, tp, key, marker)
}
