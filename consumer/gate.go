package consumer

import (
	"context"
	"errors"
	"fmt"
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
	cfg   *Dedupe // nil without Dedupe
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
	return &gate{cfg: cfg, stats: stats, leases: make(map[offsets.Partition]*storeLease)}
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
// partition to this worker: retrying cannot help.
func refuses(err error) bool {
	return errors.Is(err, dedupe.ErrFenced) || errors.Is(err, dedupe.ErrNotAssigned) || errors.Is(err, dedupe.ErrClosed)
}

// assign loads the partition's dedupe state before the worker's first batch,
// retrying a failing store. It reports false when the worker must stop.
func (g *gate) assign(w *worker) bool {
	if g.cfg == nil {
		return true
	}
	l := g.lease(w.tp)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holder = w
	return w.retry("dedupe store assign", &g.stats.storeErrors, refuses, func() error {
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

// lookup reads the store's entries for the records: attempts so far, markers
// and done. It retries a failing store and reports false when the worker
// must stop.
func (g *gate) lookup(w *worker, st []recState) bool {
	keys := keysOf(st, false)
	return w.retry("dedupe store lookup", &g.stats.storeErrors, refuses, func() error {
		entries, err := g.cfg.Store.Lookup(w.ctx, w.tp, keys)
		if err != nil {
			return err
		}
		if len(entries) != len(keys) {
			return fmt.Errorf("store returned %d entries for %d keys", len(entries), len(keys))
		}
		for i, e := range entries {
			st[i].attempts, st[i].markers, st[i].done = e.Attempts, e.Markers, e.Done
		}
		return nil
	})
}

// begin counts one delivery of each record: durably in one store round trip
// with Dedupe, in memory without. It retries a failing store and reports
// false when the worker must stop.
func (g *gate) begin(w *worker, st []recState) bool {
	if g.cfg == nil {
		for i := range st {
			st[i].attempts++
		}
		return true
	}
	keys := keysOf(st, false)
	return w.retry("dedupe store begin", &g.stats.storeErrors, refuses, func() error {
		entries, err := g.cfg.Store.Begin(w.ctx, w.tp, keys)
		if err != nil {
			return err
		}
		if len(entries) != len(keys) {
			return fmt.Errorf("store returned %d entries for %d keys", len(entries), len(keys))
		}
		for i, e := range entries {
			st[i].attempts, st[i].markers = e.Attempts, e.Markers
		}
		return nil
	})
}

// markDone records the delivered records done in the store (one round trip);
// records already done are left alone.
func (g *gate) markDone(w *worker, st []recState) bool {
	if g.cfg != nil {
		if keys := keysOf(st, true); len(keys) > 0 {
			ok := w.retry("dedupe store done", &g.stats.storeErrors, refuses, func() error {
				return g.cfg.Store.Done(w.ctx, w.tp, keys)
			})
			if !ok {
				return false
			}
		}
	}
	for i := range st {
		st[i].done = true
	}
	return true
}

// mark writes a marker durably (with Dedupe) for the handler's Batch.Mark.
func (g *gate) mark(ctx context.Context, tp offsets.Partition, key, marker string) error {
	if g.cfg == nil {
		return nil
	}
	return g.cfg.Store.Mark(ctx, tp, key, marker)
}

// keysOf lists the records' keys; skipDone leaves out the records done.
func keysOf(st []recState, skipDone bool) []string {
	keys := make([]string, 0, len(st))
	for i := range st {
		if !skipDone || !st[i].done {
			keys = append(keys, st[i].key)
		}
	}
	return keys
}
