package offsets

import "testing"

// FuzzTracker checks the tracker's invariant against a model: the watermark
// is always the smallest begun offset not yet completed (or one past the last
// begun offset when all completed), it never moves backwards, and it never
// passes an offset that is still pending. Gaps between spans are allowed.
func FuzzTracker(f *testing.F) {
	f.Add([]byte{3, 1, 2, 0, 5, 4, 9, 8, 7})
	f.Add([]byte{0, 0, 0, 255, 128, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		tr := NewTracker()
		type rng struct{ first, last int64 }
		var begun []rng
		done := map[int64]bool{} // per offset
		var next int64 = 0
		lastWM := int64(-1)
		for i, op := range ops {
			if op%3 != 0 || len(begun) == 0 {
				// begin a span after an optional gap
				first := next + int64(op%4)
				last := first + int64(op%7)
				if err := tr.Begin(first, last, int32(i)); err != nil {
					t.Fatalf("begin [%d,%d]: %v", first, last, err)
				}
				begun = append(begun, rng{first, last})
				next = last + 1
			} else {
				// complete a sub-range of a begun span
				s := begun[int(op)%len(begun)]
				a := s.first + int64(op/3)%(s.last-s.first+1)
				b := a + int64(op/5)%(s.last-a+1)
				if err := tr.Done(a, b); err != nil {
					t.Fatalf("done [%d,%d] in [%d,%d]: %v", a, b, s.first, s.last, err)
				}
				for o := a; o <= b; o++ {
					done[o] = true
				}
			}
			// model: smallest begun offset not done
			want := next
		outer:
			for _, s := range begun {
				for o := s.first; o <= s.last; o++ {
					if !done[o] {
						want = o
						break outer
					}
				}
			}
			at, _, ok := tr.Watermark()
			if !ok {
				continue
			}
			if at < lastWM {
				t.Fatalf("watermark moved back from %d to %d", lastWM, at)
			}
			lastWM = at
			if at > want {
				t.Fatalf("watermark %d passes pending offset %d", at, want)
			}
			// it may lag only over a gap of never-begun offsets
			for o := at; o < want; o++ {
				for _, s := range begun {
					if o >= s.first && o <= s.last {
						t.Fatalf("watermark %d lags behind: offset %d is begun and done, want %d", at, o, want)
					}
				}
			}
		}
	})
}
