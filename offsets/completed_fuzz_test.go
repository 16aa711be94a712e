package offsets

import "testing"

// FuzzTrackerCompleted checks Completed against a model, with records begun
// one by one (gaps between them allowed) and completed in any order: every
// range lies beyond the watermark; every offset it covers is completed or
// was never begun; every completed offset beyond the watermark is covered;
// and what EncodeCompleted makes of the ranges decodes back to them.
func FuzzTrackerCompleted(f *testing.F) {
	f.Add([]byte{1, 0, 2, 7, 3, 3, 9, 1, 4})
	f.Add([]byte{0, 0, 0, 5, 5, 5, 250, 17, 3, 99})
	f.Fuzz(func(t *testing.T, ops []byte) {
		tr := NewTracker()
		var begun []int64
		isBegun := map[int64]bool{}
		done := map[int64]bool{}
		next := int64(0)
		for _, op := range ops {
			if op%2 == 0 || len(begun) == 0 {
				o := next + int64(op%3) // a gap of up to two offsets
				if err := tr.Begin(o, o, 0); err != nil {
					t.Fatalf("begin %d: %v", o, err)
				}
				begun = append(begun, o)
				isBegun[o] = true
				next = o + 1
				continue
			}
			o := begun[int(op/2)%len(begun)]
			if err := tr.Done(o, o); err != nil {
				t.Fatalf("done %d: %v", o, err)
			}
			done[o] = true
		}
		wm, _, _ := tr.Watermark()
		got := tr.Completed()
		covered := map[int64]bool{}
		prev := wm
		for _, r := range got {
			if r.First <= prev || r.Last < r.First {
				t.Fatalf("range %v not beyond %d in %v (watermark %d)", r, prev, got, wm)
			}
			for o := r.First; o <= r.Last; o++ {
				if isBegun[o] && !done[o] {
					t.Fatalf("range %v covers %d, begun and not completed", r, o)
				}
				covered[o] = true
			}
			prev = r.Last
		}
		for o := range done {
			if o >= wm && !covered[o] {
				t.Fatalf("offset %d completed beyond the watermark %d but not in %v", o, wm, got)
			}
		}
		meta, n := EncodeCompleted(wm, got, 1<<20)
		if n != len(got) {
			t.Fatalf("encoded %d of %d ranges", n, len(got))
		}
		back, err := DecodeCompleted(wm, meta)
		if err != nil || len(back) != len(got) {
			t.Fatalf("decoded %v, %v from %v", back, err, got)
		}
		for i := range back {
			if back[i] != got[i] {
				t.Fatalf("decoded %v, want %v", back, got)
			}
		}
	})
}
