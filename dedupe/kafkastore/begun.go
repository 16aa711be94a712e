package kafkastore

import (
	"slices"
)

// begunSet holds the keys begun once that have no record of their own, by
// hash, each with the begun record that holds it. The partition's fallback
// keys begun in increasing runs of offsets (a first delivery: Begin's one
// record of a batch of new offsets) are held as spans of offsets, a few
// words a batch rather than a map entry a key; any other key is in a map.
// The zero value is empty. Called with the partition's mu held.
type begunSet struct {
	fnv   uint64                // the partition's offFNV: a hash ending in it is an offset (see partition.offHash)
	m     map[keyHash]*begunRec // keys not in spans
	spans []begunSpan           // sorted by lo, disjoint
	n     int                   // keys in spans
}

// begunSpan is the fallback keys of offsets lo through hi, begun in rec.
type begunSpan struct {
	lo, hi uint64
	rec    *begunRec
}

func (b *begunSet) len() int { return len(b.m) + b.n }

// offset returns the offset h spells out if it is a fallback key of the
// partition.
func (b *begunSet) offset(h keyHash) (uint64, bool) { return fallbackOffset(h, b.fnv) }

// span returns the index of the span holding offset o, or -1.
func (b *begunSet) span(o uint64) int {
	if len(b.spans) == 0 || o > b.spans[len(b.spans)-1].hi || o < b.spans[0].lo {
		return -1
	}
	i, _ := slices.BinarySearchFunc(b.spans, o, func(s begunSpan, o uint64) int {
		switch {
		case s.hi < o:
			return -1
		case s.lo > o:
			return 1
		}
		return 0
	})
	if i < len(b.spans) && b.spans[i].lo <= o && o <= b.spans[i].hi {
		return i
	}
	return -1
}

// get returns the begun record of h, or nil.
func (b *begunSet) get(h keyHash) *begunRec {
	if rec := b.m[h]; rec != nil {
		return rec
	}
	if o, ok := b.offset(h); ok && b.n > 0 {
		if i := b.span(o); i >= 0 {
			return b.spans[i].rec
		}
	}
	return nil
}

// add holds h, which it does not hold, as begun in rec. An offset right
// after the last span's, of the same record, extends it; one above every
// span starts a span; any other key goes in the map.
func (b *begunSet) add(h keyHash, rec *begunRec) {
	if o, ok := b.offset(h); ok {
		if n := len(b.spans); n > 0 && b.spans[n-1].rec == rec && b.spans[n-1].hi+1 == o {
			b.spans[n-1].hi = o
			b.n++
			return
		}
		if n := len(b.spans); n == 0 || o > b.spans[n-1].hi {
			b.spans = append(b.spans, begunSpan{lo: o, hi: o, rec: rec})
			b.n++
			return
		}
	}
	if b.m == nil {
		b.m = make(map[keyHash]*begunRec)
	}
	b.m[h] = rec
}

// addRange holds the fallback keys of offsets lo through hi as begun in
// rec, as one span, when they are above every key held (none of them is
// held then) and reports whether it did; else nothing is changed.
func (b *begunSet) addRange(lo, hi uint64, rec *begunRec) bool {
	if len(b.m) > 0 || hi < lo {
		return false
	}
	if n := len(b.spans); n > 0 && lo <= b.spans[n-1].hi {
		return false
	}
	b.spans = append(b.spans, begunSpan{lo: lo, hi: hi, rec: rec})
	b.n += int(hi - lo + 1)
	return true
}

// remove takes h out and returns its begun record, or nil if it was not
// held.
func (b *begunSet) remove(h keyHash) *begunRec {
	if rec := b.m[h]; rec != nil {
		delete(b.m, h)
		if len(b.m) == 0 {
			clear(b.m) // a map emptied key by key keeps its tombstones: probes grow long
		}
		return rec
	}
	o, ok := b.offset(h)
	if !ok || b.n == 0 {
		return nil
	}
	i := b.span(o)
	if i < 0 {
		return nil
	}
	rec := b.spans[i].rec
	b.cut(i, o, o)
	return rec
}

// cut takes offsets lo through hi, all inside span i, out of it.
func (b *begunSet) cut(i int, lo, hi uint64) {
	s := b.spans[i]
	b.n -= int(hi - lo + 1)
	switch {
	case lo == s.lo && hi == s.hi:
		b.spans = slices.Delete(b.spans, i, i+1)
	case lo == s.lo:
		b.spans[i].lo = hi + 1
	case hi == s.hi:
		b.spans[i].hi = lo - 1
	default:
		b.spans[i].hi = lo - 1
		b.spans = slices.Insert(b.spans, i+1, begunSpan{lo: hi + 1, hi: s.hi, rec: s.rec})
	}
}

// removeRange takes out the fallback keys of offsets lo through hi, and
// calls fn with the begun record of the keys taken out and how many, once
// or more per record.
func (b *begunSet) removeRange(lo, hi uint64, fn func(rec *begunRec, n int)) {
	if len(b.m) > 0 {
		if hi-lo < uint64(len(b.m)) {
			for o := lo; ; o++ {
				if rec := b.removeMapped(b.hashOf(o)); rec != nil {
					fn(rec, 1)
				}
				if o == hi {
					break
				}
			}
		} else {
			for h, rec := range b.m {
				if o, ok := b.offset(h); ok && o >= lo && o <= hi {
					b.removeMapped(h)
					fn(rec, 1)
				}
			}
		}
	}
	for i := 0; i < len(b.spans); {
		s := b.spans[i]
		if s.hi < lo {
			i++
			continue
		}
		if s.lo > hi {
			break
		}
		from, to := max(s.lo, lo), min(s.hi, hi)
		before := len(b.spans)
		b.cut(i, from, to)
		fn(s.rec, int(to-from+1))
		if len(b.spans) >= before {
			i++ // the span's part above hi, or below lo, is left at i
		}
	}
}

// removeMapped takes h out of the map and returns its record, or nil.
func (b *begunSet) removeMapped(h keyHash) *begunRec {
	rec := b.m[h]
	if rec != nil {
		delete(b.m, h)
		if len(b.m) == 0 {
			clear(b.m)
		}
	}
	return rec
}

// hashOf is the hash of the partition's fallback key of offset o.
func (b *begunSet) hashOf(o uint64) keyHash { return fallbackHash(o, b.fnv) }

// removeRec takes out every key begun in rec.
func (b *begunSet) removeRec(rec *begunRec) {
	for h, r := range b.m {
		if r == rec {
			delete(b.m, h)
		}
	}
	if len(b.m) == 0 {
		clear(b.m)
	}
	b.spans = slices.DeleteFunc(b.spans, func(s begunSpan) bool {
		if s.rec == rec {
			b.n -= int(s.hi - s.lo + 1)
			return true
		}
		return false
	})
}
