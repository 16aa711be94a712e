package offsets

import "fmt"

// span is a range of offsets begun together (a batch), pending or done.
type span struct {
	first, last int64
	epoch       int32
	done        bool
}

// Tracker tracks the offsets of one partition from the moment they are handed
// out to the moment they complete, and yields the contiguous watermark.
// Completions may arrive in any order. A Tracker is not safe for concurrent
// use; the Manager guards it.
//
// Offsets inside a begun span that were never delivered (gaps left by
// compaction or transaction markers) complete with the span.
type Tracker struct {
	spans []span // in offset order; done spans at the front are folded into next
	next  int64  // the watermark when no span is pending; -1 before the first Begin
	epoch int32  // the leader epoch of the last folded span
	moved bool   // whether any span completed since the tracker was made, or Start set the watermark
	// started is true while the watermark is the one Start set and no span
	// was begun since.
	started bool
}

// NewTracker returns an empty tracker. Its watermark is unknown until the
// first span is begun and completed.
func NewTracker() *Tracker { return &Tracker{next: -1, epoch: -1} }

// Start sets the watermark of a tracker in which nothing was begun yet to
// at: the partition's owner knows everything below at is done (a sink that
// stores its offsets said so). Watermark then reports at as moved, so that it
// is committed even if no record follows. A first span begun below at (the
// log was reset under the start) discards it, as if Start was never called.
// Start is ignored once a span was begun, or when at is negative.
func (t *Tracker) Start(at int64) {
	if at < 0 || t.next >= 0 || len(t.spans) > 0 {
		return
	}
	t.next, t.epoch, t.moved, t.started = at, -1, true, true
}

// Begin registers the span [first, last] as handed out, with the leader epoch
// of its last record. Spans must be begun in increasing offset order and must
// not overlap.
func (t *Tracker) Begin(first, last int64, epoch int32) error {
	if first > last || first < 0 {
		return fmt.Errorf("offsets: invalid span [%d, %d]", first, last)
	}
	if n := len(t.spans); n > 0 {
		if prev := t.spans[n-1]; first <= prev.last {
			return fmt.Errorf("offsets: span [%d, %d] begins at or before the end of the previous span %d", first, last, prev.last)
		}
	} else if t.next >= 0 && first < t.next {
		if !t.started {
			return fmt.Errorf("offsets: span [%d, %d] begins below the watermark %d", first, last, t.next)
		}
		// The start was not where the records came from (the log was
		// reset under it): the tracker starts afresh at the first span.
		t.next, t.moved = -1, false
	}
	t.started = false
	if t.next < 0 {
		t.next = first
	}
	t.spans = append(t.spans, span{first: first, last: last, epoch: epoch})
	return nil
}

// Done marks the offsets [first, last] complete. The range must lie inside
// begun spans; a span partly covered is split, its covered part done and the
// rest still pending. Done on offsets already done is harmless.
func (t *Tracker) Done(first, last int64) error {
	if first > last {
		return fmt.Errorf("offsets: invalid range [%d, %d]", first, last)
	}
	if t.next >= 0 && last < t.next {
		return nil // already folded into the watermark
	}
	if t.next >= 0 && first < t.next {
		first = t.next // the part below the watermark is already done
	}
	i := t.find(first)
	if i < 0 {
		return fmt.Errorf("offsets: range [%d, %d] was never begun", first, last)
	}
	for i < len(t.spans) && t.spans[i].first <= last {
		s := t.spans[i]
		if s.done {
			i++
			continue
		}
		if s.first < first { // keep the head pending
			head, tail := s, s
			head.last, tail.first = first-1, first
			t.insert(i, head, tail)
			i++
			continue
		}
		if s.last > last { // keep the tail pending
			head, tail := s, s
			head.last, tail.first = last, last+1
			head.done = true
			t.insert(i, head, tail)
			break
		}
		t.spans[i].done = true
		i++
	}
	t.fold()
	return nil
}

// find returns the index of the span containing offset, or of the first span
// after it if offset falls into a gap, or -1 if offset is above every span.
func (t *Tracker) find(offset int64) int {
	lo, hi := 0, len(t.spans)
	for lo < hi {
		mid := (lo + hi) / 2
		if t.spans[mid].last < offset {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(t.spans) {
		return -1
	}
	return lo
}

func (t *Tracker) insert(i int, a, b span) {
	t.spans = append(t.spans, span{})
	copy(t.spans[i+2:], t.spans[i+1:])
	t.spans[i], t.spans[i+1] = a, b
}

// fold moves the watermark over the completed spans at the front.
func (t *Tracker) fold() {
	n := 0
	for n < len(t.spans) && t.spans[n].done {
		t.next = t.spans[n].last + 1
		t.epoch = t.spans[n].epoch
		t.moved = true
		n++
	}
	switch {
	case n == 0:
	case n == len(t.spans):
		t.spans = t.spans[:0] // the in-order case: the array is reused
	default:
		// Out-of-order completions leave many spans pending: drop the
		// folded ones without copying the rest. The array's front is
		// freed when append next grows it.
		t.spans = t.spans[n:]
	}
}

// Watermark returns the next offset to commit and the leader epoch of the
// last record below it. ok is false while nothing has completed.
func (t *Tracker) Watermark() (offset int64, epoch int32, ok bool) {
	return t.next, t.epoch, t.moved
}

// Pending is the number of begun spans not yet folded into the watermark.
func (t *Tracker) Pending() int { return len(t.spans) }

// Completed returns the ranges completed beyond the watermark, in offset
// order: the work a restart may skip (see EncodeCompleted). Completed spans
// that follow each other in the begun order are merged across the offsets
// between them, which were never handed out (no record has them). It is
// empty when completions came in offset order.
func (t *Tracker) Completed() []Range {
	var out []Range
	prevDone := false
	for _, s := range t.spans {
		if !s.done {
			prevDone = false
			continue
		}
		if prevDone {
			out[len(out)-1].Last = s.last
		} else {
			out = append(out, Range{First: s.first, Last: s.last})
		}
		prevDone = true
	}
	return out
}
