package kafkastore

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
)

// The Store takes the partition's fallback keys by offset
// (dedupe.OffsetStore): a key given as "" and an offset is the same key as
// its dedupe.OffsetKey string, and is held the same way (by its offset),
// without its string being built or parsed. The string is built only where
// the key may have an entry of its own, which is under its string (a key
// handed out more than once, or marked).
var _ dedupe.OffsetStore = (*Store)(nil)

// offKey is the partition's fallback key of offset o as a string.
func (ps *partition) offKey(o uint64) string {
	return dedupe.OffsetKey(ps.p.Topic, ps.p.Partition, int64(o))
}

// keyAt returns keys[i] as a string: the fallback key of offsets[i] when
// keys[i] is "".
func (ps *partition) keyAt(keys []string, offsets []int64, i int) string {
	if keys[i] == "" {
		return dedupe.OffsetKey(ps.p.Topic, ps.p.Partition, offsets[i])
	}
	return keys[i]
}

// offsetCall checks the lengths of an OffsetStore call's slices (out too
// when withOut) and its context, and returns p's state with its mu held.
func (s *Store) offsetCall(ctx context.Context, p dedupe.Partition, keys []string, offsets []int64, out []dedupe.Entry, withOut bool) (*partition, error) {
	if len(offsets) != len(keys) || withOut && len(out) != len(keys) {
		return nil, dedupe.ErrKeyLengths
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.partition(p)
}

// liveOwn is live for the partition's fallback key of offset o.
func (s *Store) liveOwn(ps *partition, o uint64, now int64) (entry, bool) {
	key := "" // not in m when m is empty; else m is asked under its string
	if len(ps.m) > 0 {
		key = ps.offKey(o)
	}
	return s.liveHashed(ps, key, ps.offHash(o), now)
}

// ownAscending reports whether keys are all the partition's fallback keys
// (given by offset), in increasing offset order, and returns the lowest.
func ownAscending(keys []string, offsets []int64) (lo uint64, ok bool) {
	if len(keys) == 0 {
		return 0, false
	}
	for i, k := range keys {
		if k != "" || offsets[i] < 0 || i > 0 && offsets[i] <= offsets[i-1] {
			return 0, false
		}
	}
	return uint64(offsets[0]), true
}

// unknownFrom reports whether the partition holds nothing of its fallback
// keys of offsets lo and above: none done (runs), begun (spans or the map
// of begun keys) or with a record of its own (m; any key there makes it
// answer false). Called with ps.mu held.
func (ps *partition) unknownFrom(lo uint64) bool {
	if len(ps.m) > 0 || len(ps.begun.m) > 0 {
		return false
	}
	if top, held := ps.runs.last(); held && lo <= top {
		return false
	}
	if n := len(ps.begun.spans); n > 0 && lo <= ps.begun.spans[n-1].hi {
		return false
	}
	return true
}

// LookupOffsets is Lookup of keys where "" stands for the partition's
// fallback key of the offset beside it, with the entries written into out.
func (s *Store) LookupOffsets(ctx context.Context, p dedupe.Partition, keys []string, offsets []int64, out []dedupe.Entry) error {
	ps, err := s.offsetCall(ctx, p, keys, offsets, out, true)
	if err != nil {
		return err
	}
	defer ps.mu.Unlock()
	if lo, ok := ownAscending(keys, offsets); ok && ps.unknownFrom(lo) {
		// A batch of first deliveries: nothing to look up key by key.
		clear(out)
		return nil
	}
	now := s.opts.Now().UnixNano()
	for i, k := range keys {
		var e entry
		var ok bool
		if k == "" && offsets[i] >= 0 {
			e, ok = s.liveOwn(ps, uint64(offsets[i]), now)
		} else {
			e, ok = s.live(ps, ps.keyAt(keys, offsets, i), now)
		}
		if ok {
			out[i] = e.export()
		} else {
			out[i] = dedupe.Entry{}
		}
	}
	return nil
}

// BeginOffsets is Begin of keys where "" stands for the partition's
// fallback key of the offset beside it, with the entries written into out.
// A call of fallback keys only, in increasing order, none of them seen
// before (a first delivery) is counted in one begun record of runs of
// offsets, a few bytes for a batch of consecutive offsets; any other call
// is Begin's.
func (s *Store) BeginOffsets(ctx context.Context, p dedupe.Partition, keys []string, offsets []int64, out []dedupe.Entry) error {
	ps, err := s.offsetCall(ctx, p, keys, offsets, out, true)
	if err != nil {
		return err
	}
	defer ps.mu.Unlock()
	if s.firstDelivery(ps, keys, offsets) {
		now := s.opts.Now().UnixNano()
		expires := now + int64(s.opts.Retention)
		if err := s.write(ctx, ps, nil, []*kgo.Record{ps.begunRunsRecord(expires, offsets)}); err != nil {
			if !errors.Is(err, dedupe.ErrFenced) {
				// Its retry is Begin's retry of the same keys: the
				// same counts again (see Begin).
				u := newUpdates(len(keys))
				u.asked = make([]string, len(keys))
				for i, o := range offsets {
					u.asked[i] = ps.keyAt(keys, offsets, i)
					u.addFirst(u.asked[i], ps.offHash(uint64(o)), expires)
				}
				ps.retry = u
			}
			return err
		}
		for i := range out {
			out[i] = dedupe.Entry{Attempts: 1}
		}
		return nil
	}
	strs := make([]string, len(keys))
	for i := range keys {
		strs[i] = ps.keyAt(keys, offsets, i)
	}
	return s.begin(ctx, ps, strs, out)
}

// begunRunsRecord is the begun record of the partition's fallback keys of
// offs (increasing) as runs of offsets.
func (ps *partition) begunRunsRecord(expires int64, offs []int64) *kgo.Record {
	var runs []offRun
	for _, o := range offs {
		if n := len(runs); n > 0 && runs[n-1].hi+1 == uint64(o) {
			runs[n-1].hi = uint64(o)
		} else {
			runs = append(runs, offRun{lo: uint64(o), hi: uint64(o)})
		}
	}
	return ps.setRecord(begunPrefix, appendRuns(make([]byte, 0, 40+len(runs)*4), ps.epoch, expires, ps.offFNV, runs))
}

// firstDelivery reports whether the call is a first delivery of fallback
// keys: every key "", offsets increasing, no key done, begun or with an
// entry of its own, and no failed Begin to retry.
func (s *Store) firstDelivery(ps *partition, keys []string, offsets []int64) bool {
	if ps.retry != nil || len(keys) == 0 {
		return false
	}
	if lo, ok := ownAscending(keys, offsets); ok && ps.unknownFrom(lo) {
		// Above everything the partition holds: new, without a look
		// at each key.
		return true
	}
	prev := int64(-1)
	for i, k := range keys {
		o := offsets[i]
		if k != "" || o <= prev {
			return false
		}
		prev = o
		h := ps.offHash(uint64(o))
		if !ps.notDone(h) {
			return false // maybe done, or done and expired: Begin sorts it out
		}
		if ps.begun.len() > 0 && ps.begun.get(h) != nil {
			return false
		}
		if len(ps.m) > 0 {
			if _, in := ps.m[ps.offKey(uint64(o))]; in {
				return false
			}
		}
	}
	return true
}

// DoneOffsets is Done of keys where "" stands for the partition's fallback
// key of the offset beside it.
func (s *Store) DoneOffsets(ctx context.Context, p dedupe.Partition, keys []string, offsets []int64) error {
	ps, err := s.offsetCall(ctx, p, keys, offsets, nil, false)
	if err != nil {
		return err
	}
	defer ps.mu.Unlock()
	return s.done(ctx, ps, keys, offsets)
}
