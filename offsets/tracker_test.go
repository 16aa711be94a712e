package offsets

import (
	"testing"
)

func wm(t *testing.T, tr *Tracker) (int64, bool) {
	t.Helper()
	at, _, ok := tr.Watermark()
	return at, ok
}

// Guards the core rule: the watermark never passes a span that is still
// pending, even when later spans completed first.
func TestWatermarkWaitsForTheOldestPendingSpan(t *testing.T) {
	tr := NewTracker()
	for _, s := range [][2]int64{{10, 19}, {20, 29}, {30, 39}} {
		if err := tr.Begin(s[0], s[1], 3); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := wm(t, tr); ok {
		t.Fatal("watermark known before anything completed")
	}
	must(t, tr.Done(30, 39))
	must(t, tr.Done(20, 29))
	if at, ok := wm(t, tr); ok {
		t.Fatalf("watermark %d moved past pending span [10,19]", at)
	}
	must(t, tr.Done(10, 19))
	if at, ok := wm(t, tr); !ok || at != 40 {
		t.Fatalf("watermark = %d, %v; want 40", at, ok)
	}
	if tr.Pending() != 0 {
		t.Fatalf("pending = %d after all done", tr.Pending())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Guards gaps (compacted offsets, transaction markers): offsets never
// delivered must not hold the watermark back.
func TestGapsBetweenSpansDoNotBlock(t *testing.T) {
	tr := NewTracker()
	must(t, tr.Begin(0, 4, 0))
	must(t, tr.Begin(9, 12, 1)) // 5..8 were compacted away
	must(t, tr.Done(0, 4))
	if at, _ := wm(t, tr); at != 5 {
		t.Fatalf("watermark = %d, want 5", at)
	}
	must(t, tr.Done(9, 12))
	at, epoch, _ := tr.Watermark()
	if at != 13 || epoch != 1 {
		t.Fatalf("watermark = %d epoch %d, want 13 epoch 1", at, epoch)
	}
}

// Guards partial completion (a batch that failed at index i): the done head
// advances the watermark, the pending tail holds it.
func TestPartialCompletionSplitsASpan(t *testing.T) {
	tr := NewTracker()
	must(t, tr.Begin(100, 199, 0))
	must(t, tr.Done(100, 149))
	if at, _ := wm(t, tr); at != 150 {
		t.Fatalf("watermark = %d, want 150", at)
	}
	must(t, tr.Done(170, 179)) // out of order, inside the tail
	if at, _ := wm(t, tr); at != 150 {
		t.Fatalf("watermark = %d, want 150", at)
	}
	must(t, tr.Done(150, 169))
	if at, _ := wm(t, tr); at != 180 {
		t.Fatalf("watermark = %d, want 180", at)
	}
	must(t, tr.Done(180, 199))
	if at, _ := wm(t, tr); at != 200 {
		t.Fatalf("watermark = %d, want 200", at)
	}
}

// Guards against spans begun out of order or overlapping being accepted (the
// watermark would then skip records).
func TestBeginRefusesOverlapAndRegression(t *testing.T) {
	tr := NewTracker()
	must(t, tr.Begin(10, 19, 0))
	if tr.Begin(15, 25, 0) == nil {
		t.Fatal("overlapping span accepted")
	}
	if tr.Begin(5, 8, 0) == nil {
		t.Fatal("span below the previous one accepted")
	}
	if tr.Begin(30, 20, 0) == nil {
		t.Fatal("inverted span accepted")
	}
	must(t, tr.Done(10, 19))
	if tr.Begin(12, 13, 0) == nil {
		t.Fatal("span below the watermark accepted")
	}
}

// Guards idempotent completion: completing again what is already committed
// territory changes nothing.
func TestDoneTwiceIsHarmless(t *testing.T) {
	tr := NewTracker()
	must(t, tr.Begin(0, 9, 0))
	must(t, tr.Done(0, 9))
	must(t, tr.Done(0, 9))
	must(t, tr.Done(3, 5))
	if at, _ := wm(t, tr); at != 10 {
		t.Fatalf("watermark = %d, want 10", at)
	}
	if tr.Done(50, 60) == nil {
		t.Fatal("completing offsets never begun above everything should fail")
	}
}

func BenchmarkTrackerBatchOf500(b *testing.B) {
	tr := NewTracker()
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		_ = tr.Begin(off, off+499, 0)
		_ = tr.Done(off, off+499)
		off += 500
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(off), "ns/record")
}

func BenchmarkTrackerOutOfOrder(b *testing.B) {
	tr := NewTracker()
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		for i := int64(0); i < 4; i++ {
			_ = tr.Begin(off+i*100, off+i*100+99, 0)
		}
		for _, i := range []int64{2, 0, 3, 1} {
			_ = tr.Done(off+i*100, off+i*100+99)
		}
		off += 400
	}
}

// Guards Start: a start offset is the watermark until records follow, the
// records that follow it fold into it, a first span below it (the log was
// reset under the start) replaces it, and it is ignored once a span was
// begun.
func TestStartSetsTheWatermarkUntilRecordsFollow(t *testing.T) {
	tr := NewTracker()
	tr.Start(100)
	if at, ok := wm(t, tr); !ok || at != 100 {
		t.Fatalf("watermark after Start(100) = %d, %v; want 100", at, ok)
	}
	must(t, tr.Begin(100, 109, 2))
	if at, ok := wm(t, tr); !ok || at != 100 {
		t.Fatalf("watermark with [100,109] pending = %d, %v; want 100", at, ok)
	}
	must(t, tr.Done(100, 109))
	if at, ok := wm(t, tr); !ok || at != 110 {
		t.Fatalf("watermark = %d, %v; want 110", at, ok)
	}
	tr.Start(500) // a span was begun: ignored
	if at, _ := wm(t, tr); at != 110 {
		t.Fatalf("Start after a span moved the watermark to %d", at)
	}
	if err := tr.Begin(50, 60, 2); err == nil {
		t.Fatal("a span below a watermark records made was accepted")
	}

	// Records from below the start: the log was reset under it.
	tr = NewTracker()
	tr.Start(100)
	must(t, tr.Begin(0, 9, 1))
	if at, ok := wm(t, tr); ok {
		t.Fatalf("watermark %d known with [0,9] pending after a reset below the start", at)
	}
	must(t, tr.Done(0, 9))
	if at, ok := wm(t, tr); !ok || at != 10 {
		t.Fatalf("watermark = %d, %v; want 10", at, ok)
	}

	// Records from above the start: the gap (compacted away) is passed.
	tr = NewTracker()
	tr.Start(100)
	must(t, tr.Begin(120, 129, 1))
	must(t, tr.Done(120, 129))
	if at, ok := wm(t, tr); !ok || at != 130 {
		t.Fatalf("watermark = %d, %v; want 130", at, ok)
	}

	tr = NewTracker()
	tr.Start(-1)
	if _, ok := wm(t, tr); ok {
		t.Fatal("Start(-1) made the watermark known")
	}
}
