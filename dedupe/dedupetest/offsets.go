package dedupetest

import (
	"errors"
	"testing"

	"github.com/kbatch/kbatch/dedupe"
)

// offsetStore opens a store and assigns it ps, skipping the case when the
// store does not implement dedupe.OffsetStore.
func offsetStore(t *testing.T, h *Harness, ps ...dedupe.Partition) dedupe.OffsetStore {
	t.Helper()
	s := open(t, h, ps...)
	os, ok := s.(dedupe.OffsetStore)
	if !ok {
		t.Skip("the store does not implement dedupe.OffsetStore")
	}
	return os
}

// offsetKeysAreTheirStrings guards an OffsetStore against keeping the
// fallback keys it is given by offset apart from the same keys given as
// strings (OffsetKey): a record counted by the consumer through one call
// and read through the other would lose its count, its markers or its
// done, and be handled again or never dead-lettered. Keys of a header mix
// with them in one call, a key given as a string where an offset could be
// is the same key, and the calls keep working across a reopen.
func offsetKeysAreTheirStrings(t *testing.T, h *Harness, f Features) {
	p, q := part(h, 0), part(h, 1)
	ctx := testContext(t)
	s := offsetStore(t, h, p, q)
	okey := func(o int64) string { return dedupe.OffsetKey(p.Topic, p.Partition, o) }

	// One batch: offsets 10..13 by offset, a header key, offset 14 as a
	// string.
	keys := []string{"", "", "hdr", "", "", okey(14)}
	offs := []int64{10, 11, -1, 12, 13, 99}
	out := make([]dedupe.Entry, len(keys))
	if err := s.LookupOffsets(ctx, p, keys, offs, out); err != nil {
		t.Fatal(err)
	}
	for _, e := range out {
		want(t, f, "a new key before Begin", e, st{})
	}
	if err := s.BeginOffsets(ctx, p, keys, offs, out); err != nil {
		t.Fatal(err)
	}
	for _, e := range out {
		want(t, f, "a new key after BeginOffsets", e, st{attempts: 1})
	}
	es := lookup(t, s, p, okey(10), okey(13), "hdr", okey(14), okey(99))
	want(t, f, "offset 10 by string after BeginOffsets", es[0], st{attempts: 1})
	want(t, f, "offset 13 by string after BeginOffsets", es[1], st{attempts: 1})
	want(t, f, "hdr by string after BeginOffsets", es[2], st{attempts: 1})
	want(t, f, "offset 14 (given as a string) after BeginOffsets", es[3], st{attempts: 1})
	want(t, f, "offset 99 (the offset beside a string key)", es[4], st{})
	want(t, f, "offset 10 of another partition", lookup(t, s, q, dedupe.OffsetKey(q.Topic, q.Partition, 10))[0], st{})

	// A second delivery of 11 by string, a marker on 12 by string: both
	// seen by offset.
	begin(t, s, p, okey(11))
	mark(t, s, p, okey(12), "charged")
	if err := s.LookupOffsets(ctx, p, []string{"", ""}, []int64{11, 12}, out[:2]); err != nil {
		t.Fatal(err)
	}
	want(t, f, "offset 11 by offset after a Begin by string", out[0], st{attempts: 2})
	want(t, f, "offset 12 by offset after a Mark by string", out[1], st{attempts: 1, markers: []string{"charged"}})

	// Done by offset, seen by string, and not counted again by offset.
	if err := s.DoneOffsets(ctx, p, []string{"", "", "", "hdr"}, []int64{10, 11, 12, 0}); err != nil {
		t.Fatal(err)
	}
	done(t, s, p, okey(13))
	es = lookup(t, s, p, okey(10), okey(11), okey(12), "hdr")
	for _, e := range es {
		wantDone(t, "a key done by offset, by string", e)
	}
	if err := s.BeginOffsets(ctx, p, []string{"", "", ""}, []int64{10, 13, 15}, out[:3]); err != nil {
		t.Fatal(err)
	}
	wantDone(t, "offset 10 done, BeginOffsets again", out[0])
	wantDone(t, "offset 13 done by string, BeginOffsets", out[1])
	want(t, f, "offset 15, new", out[2], st{attempts: 1})

	// A reopen sees it all, by either spelling.
	closeStore(t, s)
	s = offsetStore(t, h, p)
	if err := s.LookupOffsets(ctx, p, []string{"", "", ""}, []int64{10, 14, 15}, out[:3]); err != nil {
		t.Fatal(err)
	}
	wantDone(t, "offset 10 after a reopen", out[0])
	want(t, f, "offset 14 after a reopen", out[1], st{attempts: 1})
	want(t, f, "offset 15 after a reopen", out[2], st{attempts: 1})

	// Slices of different lengths are refused.
	if err := s.LookupOffsets(ctx, p, []string{""}, nil, out[:1]); !errors.Is(err, dedupe.ErrKeyLengths) {
		t.Errorf("LookupOffsets without offsets: %v, want ErrKeyLengths", err)
	}
	if err := s.BeginOffsets(ctx, p, []string{""}, []int64{1}, nil); !errors.Is(err, dedupe.ErrKeyLengths) {
		t.Errorf("BeginOffsets without room for entries: %v, want ErrKeyLengths", err)
	}
	if err := s.DoneOffsets(ctx, p, []string{"", ""}, []int64{1}); !errors.Is(err, dedupe.ErrKeyLengths) {
		t.Errorf("DoneOffsets with one offset for two keys: %v, want ErrKeyLengths", err)
	}
}

// wantDone checks that a key is done (what a store keeps of a done key
// besides is up to it: the consumer reads only Done).
func wantDone(t *testing.T, what string, got dedupe.Entry) {
	t.Helper()
	if !got.Done {
		t.Errorf("%s: got attempts %d, done false, markers %q; want done", what, got.Attempts, got.Markers)
	}
}
