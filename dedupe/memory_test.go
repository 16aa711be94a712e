package dedupe_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/dedupe/dedupetest"
)

func newMemoryHarness(t *testing.T) *dedupetest.Harness {
	clock := dedupetest.NewClock(time.Time{})
	backend := dedupe.NewMemoryBackend()
	return &dedupetest.Harness{
		Open: func(t *testing.T) dedupe.Store {
			s := dedupe.NewMemory(dedupe.MemoryOptions{Backend: backend, Now: clock.Now})
			t.Cleanup(func() { _ = s.Close() })
			return s
		},
		Topic:      "input",
		Partitions: 4,
		Retention:  dedupe.DefaultMemoryMaxAge,
		Advance:    clock.Advance,
		InjectMalformed: func(_ *testing.T, p dedupe.Partition, key string) {
			backend.InjectMalformed(p, key)
		},
		Malformed: func(s dedupe.Store) int64 { return s.(*dedupe.Memory).Stats().Malformed },
		OpenBounded: func(t *testing.T, maxKeys int) dedupe.Store {
			s := dedupe.NewMemory(dedupe.MemoryOptions{Backend: backend, Now: clock.Now, MaxKeys: maxKeys})
			t.Cleanup(func() { _ = s.Close() })
			return s
		},
		Forgotten: func(s dedupe.Store) int64 { return s.(*dedupe.Memory).Stats().Evicted },
	}
}

func TestMemoryConformance(t *testing.T) {
	dedupetest.Run(t, newMemoryHarness, dedupetest.Features{FencedWritesFail: true})
}

// TestMemoryMaxKeys guards the memory bound: a store that grows without
// limit, that evicts the most recently written keys instead of the least
// recently written, or that counts only one partition against MaxKeys.
func TestMemoryMaxKeys(t *testing.T) {
	ctx := context.Background()
	clock := dedupetest.NewClock(time.Time{})
	m := dedupe.NewMemory(dedupe.MemoryOptions{MaxKeys: 3, Now: clock.Now})
	p0 := dedupe.Partition{Topic: "t", Partition: 0}
	p1 := dedupe.Partition{Topic: "t", Partition: 1}
	for _, p := range []dedupe.Partition{p0, p1} {
		if err := m.Assign(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	step := func(p dedupe.Partition, key string) {
		t.Helper()
		clock.Advance(time.Second)
		if _, err := m.Begin(ctx, p, []string{key}); err != nil {
			t.Fatal(err)
		}
	}
	step(p0, "a") // oldest
	step(p1, "b")
	step(p0, "c")
	step(p0, "a") // rewritten: now the newest; b is the oldest
	step(p1, "d") // over the bound: b goes

	if s := m.Stats(); s.Keys != 3 || s.Evicted != 1 {
		t.Fatalf("stats %+v, want 3 keys and 1 eviction", s)
	}
	got0, _ := m.Lookup(ctx, p0, []string{"a", "c"})
	got1, _ := m.Lookup(ctx, p1, []string{"b", "d"})
	if got0[0].Attempts != 2 || got0[1].Attempts != 1 || got1[0].Attempts != 0 || got1[1].Attempts != 1 {
		t.Fatalf("attempts a=%d c=%d b=%d d=%d, want a=2 c=1 b=0 (evicted) d=1",
			got0[0].Attempts, got0[1].Attempts, got1[0].Attempts, got1[1].Attempts)
	}
}

// TestMemoryMaxKeysAcrossManyPartitions guards the order of eviction when
// one call goes over the bound by several keys held by several partitions:
// the least recently written go first, whichever partition holds them,
// though the partition of the oldest holds more keys after them.
func TestMemoryMaxKeysAcrossManyPartitions(t *testing.T) {
	ctx := context.Background()
	clock := dedupetest.NewClock(time.Time{})
	m := dedupe.NewMemory(dedupe.MemoryOptions{MaxKeys: 6, Now: clock.Now})
	part := func(i int32) dedupe.Partition { return dedupe.Partition{Topic: "t", Partition: i} }
	for i := range int32(5) {
		if err := m.Assign(ctx, part(i)); err != nil {
			t.Fatal(err)
		}
	}
	begin := func(p int32, keys ...string) {
		t.Helper()
		clock.Advance(time.Second)
		if _, err := m.Begin(ctx, part(p), keys); err != nil {
			t.Fatal(err)
		}
	}
	begin(3, "a") // oldest
	begin(4, "b")
	begin(3, "c")
	begin(1, "d")
	begin(3, "e")
	begin(2, "f")
	begin(2, "g", "h", "i") // three over the bound: a, b and c go
	if s := m.Stats(); s.Keys != 6 || s.Evicted != 3 {
		t.Fatalf("stats %+v, want 6 keys and 3 evictions", s)
	}
	where := map[string]int32{"a": 3, "b": 4, "c": 3, "d": 1, "e": 3, "f": 2, "g": 2, "h": 2, "i": 2}
	for key, p := range where {
		es, err := m.Lookup(ctx, part(p), []string{key})
		if err != nil {
			t.Fatal(err)
		}
		want := 1
		if key <= "c" {
			want = 0
		}
		if es[0].Attempts != want {
			t.Errorf("key %s: attempts %d, want %d", key, es[0].Attempts, want)
		}
	}
}

// TestMemoryAssignBoundsThePartitionsItAdds guards the count of keys
// against MaxKeys, which calls move by their own changes: a partition
// assigned with keys of an earlier owner's must be counted at once, and
// the bound kept from the Assign on.
func TestMemoryAssignBoundsThePartitionsItAdds(t *testing.T) {
	ctx := context.Background()
	clock := dedupetest.NewClock(time.Time{})
	backend := dedupe.NewMemoryBackend()
	p0 := dedupe.Partition{Topic: "t", Partition: 0}
	p1 := dedupe.Partition{Topic: "t", Partition: 1}
	earlier := dedupe.NewMemory(dedupe.MemoryOptions{Backend: backend, Now: clock.Now})
	if err := earlier.Assign(ctx, p1); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		clock.Advance(time.Second)
		if _, err := earlier.Begin(ctx, p1, []string{k}); err != nil {
			t.Fatal(err)
		}
	}
	earlier.Release(p1)

	m := dedupe.NewMemory(dedupe.MemoryOptions{Backend: backend, Now: clock.Now, MaxKeys: 3})
	if err := m.Assign(ctx, p0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if _, err := m.Begin(ctx, p0, []string{"x"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Assign(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); s.Keys != 3 || s.Evicted != 3 {
		t.Fatalf("stats after assigning a partition of 5 keys beside one of 1: %+v, want 3 keys and 3 evictions", s)
	}
	// a, b and c were the least recently written: d, e and x are kept.
	es, err := m.Lookup(ctx, p1, []string{"c", "d", "e"})
	if err != nil {
		t.Fatal(err)
	}
	if es[0].Attempts != 0 || es[1].Attempts != 1 || es[2].Attempts != 1 {
		t.Errorf("attempts c=%d d=%d e=%d after the Assign, want c=0 (forgotten) d=1 e=1", es[0].Attempts, es[1].Attempts, es[2].Attempts)
	}
}

// TestMemoryExpiresIsLastWritePlusMaxAge guards Entry.Expires: the consumer
// and operators read it to know how long a done key still protects
// against replays.
func TestMemoryExpiresIsLastWritePlusMaxAge(t *testing.T) {
	ctx := context.Background()
	clock := dedupetest.NewClock(time.Time{})
	m := dedupe.NewMemory(dedupe.MemoryOptions{MaxAge: time.Hour, Now: clock.Now})
	p := dedupe.Partition{Topic: "t", Partition: 0}
	if err := m.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	es, err := m.Begin(ctx, p, []string{"k"})
	if err != nil {
		t.Fatal(err)
	}
	if want := clock.Now().Add(time.Hour); !es[0].Expires.Equal(want) {
		t.Fatalf("Expires %v after Begin, want %v", es[0].Expires, want)
	}
	clock.Advance(10 * time.Minute)
	if err := m.Done(ctx, p, []string{"k"}); err != nil {
		t.Fatal(err)
	}
	es, _ = m.Lookup(ctx, p, []string{"k"})
	if want := clock.Now().Add(time.Hour); !es[0].Expires.Equal(want) {
		t.Fatalf("Expires %v after Done, want %v", es[0].Expires, want)
	}
}

// TestMemoryPrivateBackend guards the default: stores opened without a
// Backend must not share state by accident (a package-level default
// backend would leak keys between tests and consumers in one process).
func TestMemoryPrivateBackend(t *testing.T) {
	ctx := context.Background()
	p := dedupe.Partition{Topic: "t", Partition: 0}
	a, b := dedupe.NewMemory(dedupe.MemoryOptions{}), dedupe.NewMemory(dedupe.MemoryOptions{})
	for _, s := range []*dedupe.Memory{a, b} {
		if err := s.Assign(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Begin(ctx, p, []string{"k"}); err != nil {
		t.Fatalf("a: %v (b's Assign fenced a: the backend is shared)", err)
	}
	es, err := b.Lookup(ctx, p, []string{"k"})
	if err != nil || es[0].Attempts != 0 {
		t.Fatalf("b sees attempts %d (err %v) for a key only a wrote, want 0", es[0].Attempts, err)
	}
}

// BenchmarkMemoryBeginDone measures the dedupe gate's cost per batch of 500
// keys on the memory store: one Begin and one Done, with fresh keys each
// batch (the store runs at its MaxKeys bound, so evictions are included),
// the batches going round the partitions assigned to the store.
func BenchmarkMemoryBeginDone(b *testing.B) {
	for _, parts := range []int{1, 8, 1024} {
		b.Run("partitions="+strconv.Itoa(parts), func(b *testing.B) { benchMemoryBeginDone(b, parts) })
	}
}

func benchMemoryBeginDone(b *testing.B, parts int) {
	const batch = 500
	ctx := context.Background()
	m := dedupe.NewMemory(dedupe.MemoryOptions{})
	for i := range parts {
		if err := m.Assign(ctx, dedupe.Partition{Topic: "t", Partition: int32(i)}); err != nil {
			b.Fatal(err)
		}
	}
	// Precomputed batches, more keys than MaxKeys, so that a batch used
	// again was evicted in between and counts as new.
	batches := make([][]string, 2*dedupe.DefaultMemoryMaxKeys/batch+1)
	for i := range batches {
		batches[i] = make([]string, batch)
		for j := range batches[i] {
			batches[i][j] = "key-" + strconv.Itoa(i*batch+j)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		keys := batches[i%len(batches)]
		p := dedupe.Partition{Topic: "t", Partition: int32(i % parts)}
		i++
		es, err := m.Begin(ctx, p, keys)
		if err != nil {
			b.Fatal(err)
		}
		if es[0].Done {
			b.Fatal("a new key is done: the batch was not evicted")
		}
		if err := m.Done(ctx, p, keys); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*batch), "ns/key")
}

func ExampleMemory() {
	ctx := context.Background()
	store := dedupe.NewMemory(dedupe.MemoryOptions{})
	p := dedupe.Partition{Topic: "orders", Partition: 0}
	_ = store.Assign(ctx, p)

	// The first delivery fails after charging: the handler marked it.
	es, _ := store.Begin(ctx, p, []string{"order-42"})
	_ = store.Mark(ctx, p, "order-42", "charged")
	fmt.Println(es[0].Attempts, es[0].Markers)

	// The redelivery sees the count and the marker, and succeeds.
	es, _ = store.Begin(ctx, p, []string{"order-42"})
	fmt.Println(es[0].Attempts, es[0].Markers, es[0].HasMarker("charged"))
	_ = store.Done(ctx, p, []string{"order-42"})

	// A replay is skipped.
	es, _ = store.Begin(ctx, p, []string{"order-42"})
	fmt.Println(es[0].Attempts, es[0].Done)
	// Output:
	// 1 []
	// 2 [charged] true
	// 2 true
}

// TestMemoryFallbackKeysInSpans guards the compact form of fallback keys
// (runs of offsets instead of an entry per key, which made the memory store
// a quarter of kbatch's speed): they must behave as any key — counted once
// per call, a second delivery counted, markers kept, done skipped, state
// shared through the backend, forgotten with MaxAge — and a span must count
// against MaxKeys.
func TestMemoryFallbackKeysInSpans(t *testing.T) {
	ctx := context.Background()
	clock := dedupetest.NewClock(time.Time{})
	backend := dedupe.NewMemoryBackend()
	p := dedupe.Partition{Topic: "orders", Partition: 3}
	key := func(o int64) string { return dedupe.OffsetKey(p.Topic, p.Partition, o) }
	open := func() *dedupe.Memory {
		m := dedupe.NewMemory(dedupe.MemoryOptions{Backend: backend, Now: clock.Now, MaxAge: time.Hour})
		if err := m.Assign(ctx, p); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := open()
	batch := []string{key(10), key(11), key(12), key(11), key(13)}
	es, err := m.Begin(ctx, p, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if e.Attempts != 1 || e.Done {
			t.Errorf("first Begin, key %d: %+v, want attempts 1", i, e)
		}
	}
	es, _ = m.Begin(ctx, p, []string{key(12), key(99)})
	if es[0].Attempts != 2 || es[1].Attempts != 1 {
		t.Errorf("second Begin: %+v, want attempts 2 and 1", es)
	}
	if err := m.Mark(ctx, p, key(13), "charged"); err != nil {
		t.Fatal(err)
	}
	if err := m.Done(ctx, p, []string{key(10), key(11)}); err != nil {
		t.Fatal(err)
	}
	_ = m.Close()

	m = open()
	es, _ = m.Lookup(ctx, p, []string{key(10), key(11), key(12), key(13), key(14), key(99)})
	want := []struct {
		attempts int
		done     bool
		marker   bool
	}{{0, true, false}, {0, true, false}, {2, false, false}, {1, false, true}, {0, false, false}, {1, false, false}}
	for i, w := range want {
		if (es[i].Attempts != w.attempts && !w.done) || es[i].Done != w.done || es[i].HasMarker("charged") != w.marker {
			t.Errorf("after a reopen, key %d: %+v, want %+v", i, es[i], w)
		}
	}
	es, _ = m.Begin(ctx, p, []string{key(10), key(13)})
	if !es[0].Done || es[1].Attempts != 2 {
		t.Errorf("Begin after a reopen: %+v, want done and attempts 2", es)
	}
	clock.Advance(2 * time.Hour)
	es, _ = m.Lookup(ctx, p, []string{key(10), key(12), key(99)})
	for i, e := range es {
		if e.Done || e.Attempts != 0 {
			t.Errorf("after MaxAge, key %d: %+v, want forgotten", i, e)
		}
	}

	small := dedupe.NewMemory(dedupe.MemoryOptions{Now: clock.Now, MaxKeys: 4})
	if err := small.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	for b := int64(0); b < 10; b++ {
		clock.Advance(time.Second)
		keys := []string{key(100*b + 1), key(100*b + 2), key(100*b + 3)}
		if _, err := small.Begin(ctx, p, keys); err != nil {
			t.Fatal(err)
		}
		if err := small.Done(ctx, p, keys); err != nil {
			t.Fatal(err)
		}
	}
	es, _ = small.Lookup(ctx, p, []string{key(1), key(903)})
	if es[0].Done || !es[1].Done {
		t.Errorf("with MaxKeys 4: oldest %+v, newest %+v; want the oldest forgotten, the newest done", es[0], es[1])
	}
	if st := small.Stats(); st.Evicted == 0 || st.Keys > 4*3 {
		t.Errorf("with MaxKeys 4: %+v, want evictions and at most 4 spans held", st)
	}
}

// BenchmarkMemoryFallbackBatch measures the gate's three calls (Lookup,
// Begin, Done) per batch of 1000 records without an idempotency key, whose
// fallback keys follow each other in offset order, as on a partition.
func BenchmarkMemoryFallbackBatch(b *testing.B) {
	const batch = 1000
	ctx := context.Background()
	m := dedupe.NewMemory(dedupe.MemoryOptions{})
	p := dedupe.Partition{Topic: "bench-topic", Partition: 3}
	if err := m.Assign(ctx, p); err != nil {
		b.Fatal(err)
	}
	keys := make([]string, batch)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for j := range keys {
			keys[j] = dedupe.OffsetKey(p.Topic, p.Partition, int64(n*batch+j))
		}
		n++
		b.StartTimer()
		if _, err := m.Lookup(ctx, p, keys); err != nil {
			b.Fatal(err)
		}
		es, err := m.Begin(ctx, p, keys)
		if err != nil {
			b.Fatal(err)
		}
		if es[0].Done || es[0].Attempts != 1 {
			b.Fatalf("a new key: %+v", es[0])
		}
		if err := m.Done(ctx, p, keys); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*batch), "ns/key")
}

// BenchmarkMemoryBatch is the memory store's cost per record of a batch of
// first deliveries keyed by offset (Lookup, Begin, Done), the keys given as
// OffsetKey strings (any Store; building them is not timed) or by offset
// (OffsetStore).
func BenchmarkMemoryBatch(b *testing.B) {
	const batch = 1000
	p := dedupe.Partition{Topic: "orders", Partition: 3}
	for _, byOffset := range []bool{false, true} {
		name := "strings"
		if byOffset {
			name = "offsets"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			s := dedupe.NewMemory(dedupe.MemoryOptions{})
			if err := s.Assign(ctx, p); err != nil {
				b.Fatal(err)
			}
			keys := make([]string, batch)
			offs := make([]int64, batch)
			out := make([]dedupe.Entry, batch)
			b.ReportAllocs()
			next := int64(0)
			for b.Loop() {
				b.StopTimer() // the strings are the caller's cost: the store's calls alone are timed
				for i := range keys {
					offs[i] = next + int64(i)
					if !byOffset {
						keys[i] = dedupe.OffsetKey(p.Topic, p.Partition, offs[i])
					}
				}
				b.StartTimer()
				next += batch
				var err error
				if byOffset {
					err = errors.Join(s.LookupOffsets(ctx, p, keys, offs, out), s.BeginOffsets(ctx, p, keys, offs, out), s.DoneOffsets(ctx, p, keys, offs))
				} else {
					_, err1 := s.Lookup(ctx, p, keys)
					_, err2 := s.Begin(ctx, p, keys)
					err = errors.Join(err1, err2, s.Done(ctx, p, keys))
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// assignedMemory is a memory store of its own backend that owns p.
func assignedMemory(t *testing.T, p dedupe.Partition) *dedupe.Memory {
	t.Helper()
	m := dedupe.NewMemory(dedupe.MemoryOptions{})
	if err := m.Assign(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return m
}

// A batch of offsets above every one the partition holds state for is
// answered without a search (first deliveries). An offset with an entry of
// its own above the spans (a marker written before its first Begin) is not
// new, and neither is the second copy of an offset in one Begin.
func TestMemoryOffsetsAboveThePartitionsStateAreNew(t *testing.T) {
	ctx := context.Background()
	p := dedupe.Partition{Topic: "orders", Partition: 1}
	m := assignedMemory(t, p)
	if _, err := m.Begin(ctx, p, []string{dedupe.OffsetKey(p.Topic, p.Partition, 5)}); err != nil {
		t.Fatal(err)
	}
	if err := m.Mark(ctx, p, dedupe.OffsetKey(p.Topic, p.Partition, 100), "charged"); err != nil {
		t.Fatal(err)
	}
	out := make([]dedupe.Entry, 4)
	keys := make([]string, 4) // "": the fallback key of the offset
	if err := m.LookupOffsets(ctx, p, keys, []int64{5, 99, 100, 101}, out); err != nil {
		t.Fatal(err)
	}
	if out[0].Attempts != 1 || out[1].Attempts != 0 || !out[2].HasMarker("charged") || out[3].Attempts != 0 || out[3].Markers != nil {
		t.Fatalf("Lookup of 5, 99, 100, 101: %+v; want attempts 1, nothing, the marker, nothing", out)
	}
	if err := m.BeginOffsets(ctx, p, keys, []int64{100, 101, 102, 101}, out); err != nil {
		t.Fatal(err)
	}
	for i, e := range out {
		if e.Attempts != 1 || e.Done {
			t.Errorf("Begin of 100, 101, 102, 101: entry %d is %+v, want attempts 1", i, e)
		}
	}
	if !out[0].HasMarker("charged") {
		t.Errorf("Begin of 100 lost its marker: %+v", out[0])
	}
	if err := m.BeginOffsets(ctx, p, keys[:3], []int64{101, 102, 103}, out[:3]); err != nil {
		t.Fatal(err)
	}
	if out[0].Attempts != 2 || out[1].Attempts != 2 || out[2].Attempts != 1 {
		t.Errorf("second Begin of 101, 102 and a first of 103: %+v, want attempts 2, 2, 1", out[:3])
	}
}

// A Done of exactly the offsets a Begin counted as new moves their span from
// begun to done at once; any other Done goes key by key. Both leave the same
// state: each key done once, counted once.
func TestMemoryDoneOfABegunRun(t *testing.T) {
	ctx := context.Background()
	p := dedupe.Partition{Topic: "orders", Partition: 2}
	m := assignedMemory(t, p)
	run := func(lo, n int64) ([]string, []int64) {
		offs := make([]int64, n)
		for i := range offs {
			offs[i] = lo + int64(i)
		}
		return make([]string, n), offs
	}
	keys, offs := run(1000, 1000)
	out := make([]dedupe.Entry, len(keys))
	if err := m.BeginOffsets(ctx, p, keys, offs, out); err != nil {
		t.Fatal(err)
	}
	if err := m.DoneOffsets(ctx, p, keys, offs); err != nil {
		t.Fatal(err)
	}
	if k := m.Stats().Keys; k != 1000 {
		t.Errorf("after a Begin and a Done of 1000 offsets: %d keys held, want 1000", k)
	}
	// A Done of part of a begun run, then of the rest.
	keys, offs = run(2000, 10)
	if err := m.BeginOffsets(ctx, p, keys, offs, out[:10]); err != nil {
		t.Fatal(err)
	}
	if err := m.DoneOffsets(ctx, p, keys[:5], offs[:5]); err != nil {
		t.Fatal(err)
	}
	if k := m.Stats().Keys; k != 1010 {
		t.Errorf("after a Done of half a begun run: %d keys held, want 1010", k)
	}
	lk, lo := []string{"", "", "", "", ""}, []int64{999, 1000, 1999, 2004, 2005}
	if err := m.LookupOffsets(ctx, p, lk, lo, out[:5]); err != nil {
		t.Fatal(err)
	}
	if out[0].Done || out[0].Attempts != 0 || !out[1].Done || !out[2].Done || !out[3].Done || out[4].Done || out[4].Attempts != 1 {
		t.Errorf("Lookup of 999, 1000, 1999, 2004, 2005: %+v; want nothing, done, done, done, attempts 1", out[:5])
	}
	if err := m.BeginOffsets(ctx, p, lk, lo, out[:5]); err != nil {
		t.Fatal(err)
	}
	if out[0].Attempts != 1 || !out[1].Done || !out[2].Done || !out[3].Done || out[4].Attempts != 2 {
		t.Errorf("Begin of 999, 1000, 1999, 2004, 2005: %+v; want attempts 1, done, done, done, attempts 2", out[:5])
	}
	if err := m.DoneOffsets(ctx, p, keys[5:], offs[5:]); err != nil {
		t.Fatal(err)
	}
	if k := m.Stats().Keys; k != 1011 {
		t.Errorf("after every key done and 999 begun: %d keys held, want 1011", k)
	}
}
