package kafkastore

import "sort"

// offRuns holds the partition's own fallback keys done (see
// partition.hash) as runs of consecutive offsets sharing one expiry, rather
// than a map entry per key: keys done in one call, or within one second,
// are one run, so that a batch of first deliveries done costs a run, not a
// map entry per record. Runs are kept in offset order, disjoint; two
// adjacent runs of one expiry are one. An offset done twice keeps the later
// expiry (0, none, being the latest), as the map of hashes does.
type offRuns struct {
	r []offRun
	n int // offsets held
}

type offRun struct {
	lo, hi uint64 // inclusive
	exp    expSec
}

// later is the later of two expiries, 0 (none) being the latest.
func later(a, b expSec) expSec {
	if a == 0 || b == 0 {
		return 0
	}
	return max(a, b)
}

// find returns the index of the run holding o and true, or the index at
// which a run holding o would go and false. Offsets mostly come in
// increasing order: at or past the last run is answered without a search.
func (rs *offRuns) find(o uint64) (int, bool) {
	n := len(rs.r)
	if n == 0 || o > rs.r[n-1].hi {
		return n, false
	}
	if o >= rs.r[n-1].lo {
		return n - 1, true
	}
	i := sort.Search(n, func(i int) bool { return rs.r[i].hi >= o })
	return i, rs.r[i].lo <= o
}

// get returns o's expiry if o is held.
func (rs *offRuns) get(o uint64) (expSec, bool) {
	if i, ok := rs.find(o); ok {
		return rs.r[i].exp, true
	}
	return 0, false
}

// last returns the highest offset held; ok is false when none is.
func (rs *offRuns) last() (o uint64, ok bool) {
	if len(rs.r) == 0 {
		return 0, false
	}
	return rs.r[len(rs.r)-1].hi, true
}

// add holds o until e, or until the later of e and its expiry if it is
// held already.
func (rs *offRuns) add(o uint64, e expSec) { rs.addRange(o, o, e) }

// addRange holds lo through hi until e, each offset held already until the
// later of e and its expiry.
func (rs *offRuns) addRange(lo, hi uint64, e expSec) {
	n := len(rs.r)
	if n == 0 || lo > rs.r[n-1].hi {
		if n > 0 && rs.r[n-1].hi+1 == lo && rs.r[n-1].exp == e {
			rs.r[n-1].hi = hi // the common case: the next offsets of the same second
		} else {
			rs.r = append(rs.r, offRun{lo, hi, e})
		}
		rs.n += int(hi - lo + 1)
		return
	}
	i, _ := rs.find(lo)
	j := i
	var pieces []offRun
	next := lo // the first offset of [lo, hi] not yet placed
	added := 0
	for ; j < n && rs.r[j].lo <= hi; j++ {
		old := rs.r[j]
		if old.lo < lo {
			pieces = append(pieces, offRun{old.lo, lo - 1, old.exp})
		}
		if next < old.lo {
			pieces = append(pieces, offRun{next, old.lo - 1, e})
			added += int(old.lo - next)
		}
		pieces = append(pieces, offRun{max(old.lo, lo), min(old.hi, hi), later(old.exp, e)})
		if old.hi > hi {
			pieces = append(pieces, offRun{hi + 1, old.hi, old.exp})
		}
		next = old.hi + 1
	}
	if next <= hi && (j == i || next > rs.r[j-1].hi) {
		pieces = append(pieces, offRun{next, hi, e})
		added += int(hi - next + 1)
	}
	rs.splice(i, j, pieces...)
	rs.n += added
}

// remove takes o out of its run, if any.
func (rs *offRuns) remove(o uint64) {
	i, ok := rs.find(o)
	if !ok {
		return
	}
	old := rs.r[i]
	pieces := make([]offRun, 0, 2)
	if old.lo < o {
		pieces = append(pieces, offRun{old.lo, o - 1, old.exp})
	}
	if o < old.hi {
		pieces = append(pieces, offRun{o + 1, old.hi, old.exp})
	}
	rs.splice(i, i+1, pieces...)
	rs.n--
}

// splice replaces the runs [i, j) with pieces (disjoint, in order, between
// the runs around them) and joins runs that meet with one expiry.
func (rs *offRuns) splice(i, j int, pieces ...offRun) {
	rs.r = append(rs.r[:i], append(pieces, rs.r[j:]...)...)
	// Join from just before the pieces to just after them.
	k := max(i-1, 0)
	end := min(i+len(pieces)+1, len(rs.r))
	for k+1 < end {
		a, b := &rs.r[k], rs.r[k+1]
		if a.hi+1 == b.lo && a.exp == b.exp {
			a.hi = b.hi
			rs.r = append(rs.r[:k+1], rs.r[k+2:]...)
			end--
			continue
		}
		k++
	}
	if len(rs.r) == 0 {
		rs.r = nil
	}
}

// expire drops the runs expired at now and returns how many offsets they
// held.
func (rs *offRuns) expire(now int64) int {
	dropped := 0
	kept := rs.r[:0]
	for _, r := range rs.r {
		if r.exp.live(now) {
			kept = append(kept, r)
		} else {
			dropped += int(r.hi - r.lo + 1)
		}
	}
	clear(rs.r[len(kept):])
	rs.r = kept
	rs.n -= dropped
	return dropped
}

// evict forgets up to limit offsets of runs expiring at or before cut,
// lowest offsets first, and returns how many it forgot.
func (rs *offRuns) evict(cut expSec, limit int) int {
	forgot := 0
	kept := rs.r[:0]
	for _, r := range rs.r {
		if forgot < limit && r.exp <= cut {
			size := r.hi - r.lo + 1
			if take := uint64(limit - forgot); take < size {
				r.lo += take
				forgot = limit
			} else {
				forgot += int(size)
				continue
			}
		}
		kept = append(kept, r)
	}
	clear(rs.r[len(kept):])
	rs.r = kept
	rs.n -= forgot
	return forgot
}
