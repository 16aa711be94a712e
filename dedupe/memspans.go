package dedupe

import (
	"sort"
	"time"

	"github.com/kbatch/kbatch/internal/offkey"
)

// offsetSpans holds fallback keys (OffsetKey) of one partition without a
// map entry per key: runs of consecutive offsets, each written by one call
// at one time. A key of a span has no markers and is either done (the done
// spans) or begun once (the begun spans); a key that needs more (a second
// delivery, a marker) moves to the partition's map. Spans are kept in
// offset order, which is also about the order they were written in.
type offsetSpans struct {
	s []offsetSpan
	n int // offsets held
}

type offsetSpan struct {
	lo, hi  int64 // inclusive
	call    uint64
	written time.Time
}

// find returns the index of the span holding o, or -1. Offsets mostly come
// in increasing order: one past the last span, or in it, is answered
// without a search.
func (ss *offsetSpans) find(o int64) int {
	n := len(ss.s)
	if n == 0 || o > ss.s[n-1].hi {
		return -1
	}
	if o >= ss.s[n-1].lo {
		return n - 1
	}
	i := sort.Search(len(ss.s), func(i int) bool { return ss.s[i].hi >= o })
	if i < len(ss.s) && ss.s[i].lo <= o {
		return i
	}
	return -1
}

// add puts o in a span written by call at now: the last span grows when o
// follows it and it was written by the same call.
func (ss *offsetSpans) add(o int64, call uint64, now time.Time) {
	n := len(ss.s)
	if n > 0 && ss.s[n-1].hi+1 == o && ss.s[n-1].call == call {
		ss.s[n-1].hi = o
		ss.n++
		return
	}
	if ss.find(o) >= 0 {
		return
	}
	i := sort.Search(n, func(i int) bool { return ss.s[i].lo > o })
	ss.s = append(ss.s, offsetSpan{})
	copy(ss.s[i+1:], ss.s[i:])
	ss.s[i] = offsetSpan{lo: o, hi: o, call: call, written: now}
	ss.n++
}

// remove takes o out of its span, if any.
func (ss *offsetSpans) remove(o int64) {
	i := ss.find(o)
	if i < 0 {
		return
	}
	sp := &ss.s[i]
	ss.n--
	switch {
	case sp.lo == sp.hi:
		ss.s = append(ss.s[:i], ss.s[i+1:]...)
	case o == sp.lo:
		sp.lo++
	case o == sp.hi:
		sp.hi--
	default: // split
		right := *sp
		right.lo = o + 1
		sp.hi = o - 1
		ss.s = append(ss.s, offsetSpan{})
		copy(ss.s[i+2:], ss.s[i+1:])
		ss.s[i+1] = right
	}
}

// popFront drops the first span and returns how many offsets it held.
func (ss *offsetSpans) popFront() int {
	n := int(ss.s[0].hi - ss.s[0].lo + 1)
	ss.s = ss.s[1:]
	ss.n -= n
	if len(ss.s) == 0 {
		ss.s = nil
	}
	return n
}

// offsetOf returns the offset of key if it is a fallback key of the
// partition whose fallback keys start with prefix.
func offsetOf(key, prefix string) (int64, bool) {
	if len(key) <= len(prefix) || key[:len(prefix)] != prefix {
		return 0, false
	}
	return offkey.ParseDigits(key[len(prefix):]) // only the canonical spelling OffsetKey writes
}
