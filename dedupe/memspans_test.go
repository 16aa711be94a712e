package dedupe

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestOffsetSpansFind checks find, with its shortcut for the last span,
// against a plain set of offsets, through adds and removes in any order.
func TestOffsetSpansFind(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var ss offsetSpans
	held := map[int64]bool{}
	now := time.Unix(0, 0)
	for step := range 20000 {
		o := rng.Int64N(300)
		switch rng.IntN(3) {
		case 0, 1:
			ss.add(o, uint64(step/7), now)
			held[o] = true
		default:
			ss.remove(o)
			delete(held, o)
		}
		for q := int64(-1); q <= 301; q++ {
			i := ss.find(q)
			if (i >= 0) != held[q] {
				t.Fatalf("step %d: find(%d) = %d, held %v; spans %v", step, q, i, held[q], ss.s)
			}
			if i >= 0 && (ss.s[i].lo > q || ss.s[i].hi < q) {
				t.Fatalf("step %d: find(%d) = span %v", step, q, ss.s[i])
			}
		}
		if ss.n != len(held) {
			t.Fatalf("step %d: n = %d, held %d", step, ss.n, len(held))
		}
	}
}
