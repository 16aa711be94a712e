// Package batcher cuts a stream of items into batches by count, by bytes and
// by time.
//
// A [Batcher] is pure: it holds no goroutine, no timer and no clock. The caller
// passes the current time when it adds an item and asks [Batcher.Deadline] when
// the open batch must be flushed. This keeps the policy deterministic under
// test and lets the caller own the only timer.
//
// The wait is measured from the batch's first item (a leading-edge window): a
// trickle of items still flushes MaxWait after the first one arrived, never
// later, however many items keep arriving.
//
// MaxBytes is an upper bound: an item that would push the open batch over it
// closes the batch first (see [Batcher.Fits]). An item larger than MaxBytes on
// its own forms a batch of one.
//
//	b := batcher.New[*kgo.Record](batcher.Policy{MaxRecords: 500, MaxBytes: 1 << 20, MaxWait: time.Second})
//	for _, r := range records {
//		if !b.Fits(len(r.Value)) {
//			handle(b.Flush())
//		}
//		if b.Add(now, r, len(r.Value)) {
//			handle(b.Flush())
//		}
//	}
//	// and when time.Now() >= b.Deadline(): handle(b.Flush())
package batcher
