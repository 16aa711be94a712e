package kafkastore

import (
	"math/rand/v2"
	"testing"
)

// TestBegunSetActsAsAMap checks begunSet against a plain map of hashes to
// records under random operations shaped like the store's: batches of new
// offsets begun in order (spans), offsets begun out of order and other
// keys (the map), keys taken out one at a time, ranges of offsets done,
// and whole records forgotten.
func TestBegunSetActsAsAMap(t *testing.T) {
	const fnv = 0x9e3779b97f4a7c15
	for seed := uint64(0); seed < 25; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		b := begunSet{fnv: fnv}
		model := map[keyHash]*begunRec{}
		recs := []*begunRec{}
		off := func(o uint64) keyHash { return b.hashOf(o) }
		next := uint64(0)
		check := func(step int, what string) {
			t.Helper()
			if b.len() != len(model) {
				t.Fatalf("seed %d step %d (%s): len %d, want %d", seed, step, what, b.len(), len(model))
			}
			for h, rec := range model {
				if got := b.get(h); got != rec {
					t.Fatalf("seed %d step %d (%s): get(%x) = %p, want %p", seed, step, what, h, got, rec)
				}
			}
			for o := uint64(0); o < next+3; o++ {
				if _, in := model[off(o)]; !in && b.get(off(o)) != nil {
					t.Fatalf("seed %d step %d (%s): offset %d held, not in the model", seed, step, what, o)
				}
			}
			for i := 1; i < len(b.spans); i++ {
				if b.spans[i-1].hi >= b.spans[i].lo {
					t.Fatalf("seed %d step %d (%s): spans overlap or out of order: %+v", seed, step, what, b.spans)
				}
			}
		}
		add := func(h keyHash, rec *begunRec) {
			if _, in := model[h]; in {
				return // the store takes a key out before it adds it again
			}
			b.add(h, rec)
			model[h] = rec
		}
		for step := 0; step < 300; step++ {
			var what string
			switch op := rng.IntN(7); op {
			case 0, 1: // a batch of new offsets, maybe after a gap
				what = "batch"
				rec := &begunRec{}
				recs = append(recs, rec)
				next += uint64(rng.IntN(3))
				for n := 1 + rng.IntN(20); n > 0; n-- {
					add(off(next), rec)
					next++
				}
			case 2: // an offset below the top, or another key
				what = "stray"
				rec := &begunRec{}
				recs = append(recs, rec)
				if rng.IntN(2) == 0 && next > 0 {
					add(off(rng.Uint64N(next)), rec)
				} else {
					var h keyHash
					h[0], h[15] = byte(rng.IntN(256)), byte(rng.IntN(256))
					add(h, rec)
				}
			case 3, 4: // one offset out
				what = "remove"
				if next == 0 {
					continue
				}
				h := off(rng.Uint64N(next + 2))
				if got, want := b.remove(h), model[h]; got != want {
					t.Fatalf("seed %d step %d: remove = %p, want %p", seed, step, got, want)
				}
				delete(model, h)
			case 5: // a range of offsets done
				what = "range"
				if next == 0 {
					continue
				}
				lo := rng.Uint64N(next + 1)
				hi := lo + rng.Uint64N(30)
				counts := map[*begunRec]int{}
				b.removeRange(lo, hi, func(rec *begunRec, n int) { counts[rec] += n })
				want := map[*begunRec]int{}
				for o := lo; o <= hi; o++ {
					if rec, in := model[off(o)]; in {
						want[rec]++
						delete(model, off(o))
					}
				}
				if len(counts) != len(want) {
					t.Fatalf("seed %d step %d: removeRange(%d, %d) counted %v, want %v", seed, step, lo, hi, counts, want)
				}
				for rec, n := range want {
					if counts[rec] != n {
						t.Fatalf("seed %d step %d: removeRange(%d, %d) counted %d of a record, want %d", seed, step, lo, hi, counts[rec], n)
					}
				}
			case 6: // a record forgotten
				what = "forget"
				if len(recs) == 0 {
					continue
				}
				rec := recs[rng.IntN(len(recs))]
				b.removeRec(rec)
				for h, r := range model {
					if r == rec {
						delete(model, h)
					}
				}
			}
			check(step, what)
		}
	}
}
