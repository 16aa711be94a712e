//go:build !memchild

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func recs(p int32, offsets ...int64) []*kgo.Record {
	out := make([]*kgo.Record, len(offsets))
	for i, o := range offsets {
		out[i] = &kgo.Record{Partition: p, Offset: o, Key: []byte("k"), Value: []byte("vvv")}
	}
	return out
}

// TestCheckerCountsEachRecordOnce guards against a scenario passing on
// repeats: a record delivered twice must not stand in for a missing one.
func TestCheckerCountsEachRecordOnce(t *testing.T) {
	c := NewChecker(map[int32]Span{0: {From: 10, To: 13}, 1: {From: 0, To: 2}})
	if c.Want() != 5 {
		t.Fatalf("Want = %d, want 5", c.Want())
	}
	c.MarkRecords(0, recs(0, 10, 11, 11, 10))
	c.MarkOne(1, 0, 4)
	c.MarkOne(1, 0, 4)
	if c.Got() != 3 || c.Complete() {
		t.Fatalf("Got = %d complete=%v after repeats, want 3 and incomplete", c.Got(), c.Complete())
	}
	r := c.Report()
	if r.OK() || r.Repeats != 3 || r.Delivered != 6 {
		t.Fatalf("report %+v: want not OK, 3 repeats, 6 delivered", r)
	}
	for _, want := range []string{"2 of 5 records missing", "p0 1 (first at offset 12 of [10,13))", "p1 1 (first at offset 1 of [0,2))"} {
		if !strings.Contains(r.Missing, want) {
			t.Errorf("Missing = %q, want it to contain %q", r.Missing, want)
		}
	}
	c.MarkRecords(0, recs(0, 12))
	c.MarkOne(1, 1, 4)
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed once every record arrived")
	}
	if r := c.Report(); !r.OK() || r.Missing != "" {
		t.Fatalf("report %+v, want OK", r)
	}
	if c.Bytes() != 3*4+2*4 {
		t.Errorf("Bytes = %d, want the key+value size of the 5 distinct records (20)", c.Bytes())
	}
	if c.Elapsed() <= 0 {
		t.Errorf("Elapsed = %s, want > 0 after the first record", c.Elapsed())
	}
}

// TestCheckerIgnoresRecordsOutsideItsSpans guards the subset scenario: the
// records past the subset, and partitions never expected, must not count.
func TestCheckerIgnoresRecordsOutsideItsSpans(t *testing.T) {
	c := NewChecker(map[int32]Span{0: {From: 0, To: 2}})
	c.MarkRecords(0, recs(0, 2, 3, 4))
	c.MarkRecords(7, recs(7, 0, 1))
	c.MarkOne(-1, 0, 1)
	if c.Got() != 0 {
		t.Fatalf("Got = %d, want 0", c.Got())
	}
	if r := c.Report(); r.Stray != 6 || r.OK() {
		t.Fatalf("report %+v, want 6 stray and not OK", r)
	}
	if !c.Expects(0, 1) || c.Expects(0, 2) || c.Expects(3, 0) {
		t.Fatal("Expects disagrees with the spans")
	}
}

// TestCheckerWithNothingToReadIsComplete guards against a hang when a
// subset or topic is empty.
func TestCheckerWithNothingToReadIsComplete(t *testing.T) {
	c := NewChecker(map[int32]Span{0: {From: 5, To: 5}})
	select {
	case <-c.Done():
	case <-time.After(time.Second):
		t.Fatal("an empty checker is not done")
	}
}

// TestCheckerFirstMissingAcrossWords guards the offset arithmetic past the
// first 64-bit word.
func TestCheckerFirstMissingAcrossWords(t *testing.T) {
	var all []int64
	for o := int64(100); o < 300; o++ {
		if o != 231 {
			all = append(all, o)
		}
	}
	c := NewChecker(map[int32]Span{3: {From: 100, To: 300}})
	c.MarkRecords(3, recs(3, all...))
	if r := c.Report(); !strings.Contains(r.Missing, "p3 1 (first at offset 231 of [100,300))") {
		t.Fatalf("Missing = %q", r.Missing)
	}
}

// TestSubsetSpansSpreadsOverPartitions guards the per-record-commit
// scenario's share: an even part of each partition, never past its end.
func TestSubsetSpansSpreadsOverPartitions(t *testing.T) {
	got := subsetSpans(map[int32]Span{0: {0, 100}, 1: {50, 60}, 2: {0, 100}}, 30)
	want := map[int32]Span{0: {0, 10}, 1: {50, 60}, 2: {0, 10}}
	for p, s := range want {
		if got[p] != s {
			t.Errorf("partition %d: %+v, want %+v", p, got[p], s)
		}
	}
}

// TestCheckerElapsedSinceCountsFromAnEarlierStart guards the rate's window:
// from the first Fetch request when there was one before the first record,
// else from the first record.
func TestCheckerElapsedSinceCountsFromAnEarlierStart(t *testing.T) {
	c := NewChecker(map[int32]Span{0: {From: 0, To: 2}})
	start := time.Now()
	if c.ElapsedSince(start) != 0 {
		t.Fatalf("ElapsedSince = %s before the first record, want 0", c.ElapsedSince(start))
	}
	time.Sleep(20 * time.Millisecond)
	c.MarkOne(0, 0, 1)
	time.Sleep(5 * time.Millisecond)
	c.MarkOne(0, 1, 1)
	el := c.Elapsed()
	since := c.ElapsedSince(start)
	if since < el+20*time.Millisecond {
		t.Fatalf("ElapsedSince(a start 20ms before the first record) = %s, Elapsed = %s: want at least 20ms more", since, el)
	}
	if got := c.ElapsedSince(time.Time{}); got != el {
		t.Errorf("ElapsedSince(zero) = %s, want Elapsed %s", got, el)
	}
	if got := c.ElapsedSince(time.Now()); got != el {
		t.Errorf("ElapsedSince(a start after the first record) = %s, want Elapsed %s", got, el)
	}
}
