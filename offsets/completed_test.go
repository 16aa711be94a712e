package offsets

import (
	"context"
	"reflect"
	"testing"
)

// TestTrackerCompletedListsWorkBeyondTheWatermark guards the restart's skip
// list: records completed out of order beyond the watermark are listed,
// consecutive completed records are one range, and what folds into the
// watermark leaves the list.
func TestTrackerCompletedListsWorkBeyondTheWatermark(t *testing.T) {
	tr := NewTracker()
	for o := int64(0); o < 10; o++ {
		if o == 6 {
			continue // a gap: no record at 6
		}
		must(t, tr.Begin(o, o, 0))
	}
	for _, o := range []int64{2, 3, 5, 7, 9} {
		must(t, tr.Done(o, o))
	}
	if got, want := tr.Completed(), []Range{{2, 3}, {5, 7}, {9, 9}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("completed %v, want %v", got, want)
	}
	must(t, tr.Done(0, 0))
	must(t, tr.Done(1, 1))
	if at, _, _ := tr.Watermark(); at != 4 {
		t.Fatalf("watermark %d, want 4", at)
	}
	if got, want := tr.Completed(), []Range{{5, 7}, {9, 9}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("completed %v, want %v", got, want)
	}
}

// TestCommitCarriesTheCompletedBeyondTheWatermark guards the metadata of a
// commit: it lists what completed beyond the watermark, a commit is sent when
// only that list grew, and none when nothing changed.
func TestCommitCarriesTheCompletedBeyondTheWatermark(t *testing.T) {
	f := &fakeCommitter{}
	m := newManager(t, f, Policy{EveryRecords: 1 << 30})
	m.Assign(p0)
	ctx := context.Background()
	for o := int64(0); o < 10; o++ {
		must(t, m.Begin(p0, o, o, 0))
	}
	for _, o := range []int64{0, 1, 4, 5} {
		must(t, m.Done(p0, o, o, 1))
	}
	must(t, m.Commit(ctx))
	first := f.commits[0][p0]
	got, err := DecodeCompleted(first.At, first.Metadata)
	if first.At != 2 || err != nil || !reflect.DeepEqual(got, []Range{{4, 5}}) {
		t.Fatalf("commit %+v decodes to %v, %v", first, got, err)
	}
	must(t, m.Commit(ctx))
	if n := f.count(); n != 1 {
		t.Fatalf("%d commits without a change, want 1", n)
	}
	must(t, m.Done(p0, 8, 8, 1)) // beyond only: the watermark stays at 2
	must(t, m.Commit(ctx))
	second := f.commits[1][p0]
	got, _ = DecodeCompleted(second.At, second.Metadata)
	if second.At != 2 || !reflect.DeepEqual(got, []Range{{4, 5}, {8, 8}}) {
		t.Fatalf("second commit %+v decodes to %v", second, got)
	}
	for o := int64(2); o < 10; o++ {
		must(t, m.Done(p0, o, o, 1))
	}
	must(t, m.Commit(ctx))
	if last := f.commits[2][p0]; last.At != 10 || last.Metadata != "" {
		t.Fatalf("last commit %+v, want 10 without metadata", last)
	}
}

// TestCommitMetadataOverTheLimitIsCut guards a refused commit: completions
// too sparse for MaxMetadata are cut to what fits, counted, and the commit
// still goes.
func TestCommitMetadataOverTheLimitIsCut(t *testing.T) {
	f := &fakeCommitter{}
	m, err := NewManager(Config{Policy: Policy{EveryRecords: 1 << 30}, Commit: f.commit, MaxMetadata: 64})
	must(t, err)
	m.Assign(p0)
	for o := int64(0); o < 1000; o++ {
		must(t, m.Begin(p0, o, o, 0))
	}
	must(t, m.Done(p0, 0, 0, 1))
	for o := int64(2); o < 1000; o += 2 {
		must(t, m.Done(p0, o, o, 1))
	}
	must(t, m.Commit(context.Background()))
	c := f.commits[0][p0]
	if c.At != 1 || len(c.Metadata) > 64 || c.Metadata == "" {
		t.Fatalf("commit %+v (%d bytes of metadata)", c, len(c.Metadata))
	}
	if s := m.Stats(); s.MetadataCut != 1 {
		t.Fatalf("MetadataCut = %d, want 1", s.MetadataCut)
	}
}
