package kafkastore

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/kbatch/kbatch/dedupe"
)

// FuzzOffRuns drives the runs of offsets done and a plain map with the same
// operations (add, remove, expire, evict) and checks that they hold the
// same offsets with the same expiries, and that the runs stay in order,
// disjoint and joined. Each op is three bytes: what, an offset, an expiry.
func FuzzOffRuns(f *testing.F) {
	f.Add([]byte{0, 1, 5, 0, 2, 5, 0, 3, 5, 1, 2, 0, 0, 2, 7})
	f.Add([]byte{0, 9, 1, 0, 8, 2, 0, 10, 0, 2, 0, 1, 3, 2, 4})
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20 {
		ops := make([]byte, 3*200)
		for i := range ops {
			ops[i] = byte(rng.IntN(64))
		}
		f.Add(ops)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		var rs offRuns
		set := map[uint64]expSec{}
		for i := 0; i+2 < len(ops); i += 3 {
			o, e := uint64(ops[i+1]%32), expSec(ops[i+2]%8)
			switch ops[i] % 8 {
			case 0, 1: // mostly adds, as the store makes
				rs.add(o, e)
				if old, ok := set[o]; !ok {
					set[o] = e
				} else {
					set[o] = later(old, e)
				}
			case 2, 3:
				hi := o + uint64(ops[i]/8%8)
				rs.addRange(o, hi, e)
				for k := o; k <= hi; k++ {
					if old, ok := set[k]; !ok {
						set[k] = e
					} else {
						set[k] = later(old, e)
					}
				}
			case 4, 5:
				rs.remove(o)
				delete(set, o)
			case 6:
				now := e.nanos()
				dropped := rs.expire(now)
				want := 0
				for k, v := range set {
					if !v.live(now) {
						delete(set, k)
						want++
					}
				}
				if dropped != want {
					t.Fatalf("op %d: expire(%d) dropped %d, want %d", i/3, now, dropped, want)
				}
			case 7:
				limit := int(o % 8)
				forgot := rs.evict(e, limit)
				// Lowest offsets of expiry at or before the cut first.
				want := 0
				for k := range uint64(48) {
					if v, ok := set[k]; ok && v <= e && want < limit {
						delete(set, k)
						want++
					}
				}
				if forgot != want {
					t.Fatalf("op %d: evict(%d, %d) forgot %d, want %d", i/3, e, limit, forgot, want)
				}
			}
			checkRuns(t, i/3, &rs, set)
		}
	})
}

func checkRuns(t *testing.T, op int, rs *offRuns, set map[uint64]expSec) {
	t.Helper()
	n := 0
	for i, r := range rs.r {
		if r.lo > r.hi {
			t.Fatalf("op %d: run %d is %+v", op, i, r)
		}
		if i > 0 {
			prev := rs.r[i-1]
			if prev.hi >= r.lo {
				t.Fatalf("op %d: runs %+v and %+v overlap or are out of order", op, prev, r)
			}
			if prev.hi+1 == r.lo && prev.exp == r.exp {
				t.Fatalf("op %d: runs %+v and %+v not joined", op, prev, r)
			}
		}
		n += int(r.hi - r.lo + 1)
	}
	if n != rs.n || n != len(set) {
		t.Fatalf("op %d: runs hold %d offsets, count %d, the set %d", op, n, rs.n, len(set))
	}
	for o := range uint64(48) {
		got, ok := rs.get(o)
		want, wok := set[o]
		if ok != wok || got != want {
			t.Fatalf("op %d: offset %d: runs (%d, %v), set (%d, %v)", op, o, got, ok, want, wok)
		}
	}
	top, held := rs.last()
	var want uint64
	for o := range set {
		want = max(want, o)
	}
	if held != (len(set) > 0) || (held && top != want) {
		t.Fatalf("op %d: last (%d, %v), want %d of %d", op, top, held, want, len(set))
	}
}

// TestBoundEvictsRunsEarliestFirst guards MaxKeys over keys done held as
// runs: every key of a run counts, the partition ends within the bound,
// the keys that expire first are the ones forgotten, and the count of
// evictions says how many went.
func TestBoundEvictsRunsEarliestFirst(t *testing.T) {
	s := &Store{opts: Options{Brokers: []string{"x"}, Group: "g", MaxKeys: 100}.withDefaults()}
	ps := newPartition(dedupe.Partition{Topic: "orders", Partition: 1}, "c")
	const sec = int64(time.Second)
	for batch := range int64(10) {
		for o := batch * 50; o < (batch+1)*50; o++ {
			ps.setDone(ps.offHash(uint64(o)), (100+batch)*sec)
		}
		ps.setDone(hashKey("order-"+strconv.FormatInt(batch, 10)), (100+batch)*sec)
		s.bound(ps)
		if n := ps.doneLen(); n > 100 {
			t.Fatalf("after batch %d: %d keys held, bound 100", batch, n)
		}
	}
	// The last batch is the latest: all of it is kept.
	for o := uint64(450); o < 500; o++ {
		if _, ok := ps.doneExp(ps.offHash(o)); !ok {
			t.Fatalf("offset %d of the latest batch forgotten", o)
		}
	}
	if _, ok := ps.doneExp(ps.offHash(0)); ok {
		t.Fatal("offset 0 of the earliest batch kept")
	}
	if got, want := s.evicted.Load(), int64(510-ps.doneLen()); got != want {
		t.Fatalf("%d evictions counted, %d keys forgotten", got, want)
	}
}
