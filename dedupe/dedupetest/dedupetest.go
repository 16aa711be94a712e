package dedupetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kbatch/kbatch/dedupe"
)

// Harness is one fresh underlying state and the hooks the suite needs to
// drive stores on it. Run builds one per case.
type Harness struct {
	// Open returns a new store on the harness's state. The suite closes the
	// stores it opens, sometimes while another store on the same state is
	// still open; Open should also close the store in t.Cleanup (the suite
	// never relies on a second Close returning any particular error).
	Open func(t *testing.T) dedupe.Store
	// Topic is the input topic the suite's partitions belong to. A store
	// that needs the topic to exist (the Kafka store) gets one with
	// Partitions partitions.
	Topic string
	// Partitions is how many partitions of Topic the suite may use, at
	// least 2.
	Partitions int32
	// Retention is how long the stores keep an entry after its last write.
	Retention time.Duration
	// Advance moves the clock of every store opened on the harness forward
	// by d. Nil skips the expiry case.
	Advance func(d time.Duration)
	// InjectMalformed stores an entry for key in p that the stores cannot
	// read, as a corrupted or foreign writer would leave it. The suite calls
	// it after a store was assigned p and closed, while no store is open.
	// Nil skips the malformed-entry case.
	InjectMalformed func(t *testing.T, p dedupe.Partition, key string)
	// Malformed returns how many malformed entries s reported so far. Nil
	// skips the malformed-entry case.
	Malformed func(s dedupe.Store) int64
	// InjectFuture stores an entry for key in p as a newer version of the
	// store would write it (fields and flags this version does not know),
	// holding attempts 2, the marker "m" and not done. The suite calls it
	// while no store is open. Nil skips the forward-compatibility case
	// (a store without an encoding of its own has nothing to check).
	InjectFuture func(t *testing.T, p dedupe.Partition, key string)
	// OpenBounded returns a new store on the harness's state that keeps at
	// most about maxKeys keys in memory, and Forgotten how many keys such a
	// store forgot to stay within its bound. Nil skips the bounded-memory
	// case.
	OpenBounded func(t *testing.T, maxKeys int) dedupe.Store
	Forgotten   func(s dedupe.Store) int64
}

// Features says what a store guarantees beyond the contract of dedupe.Store.
type Features struct {
	// FencedWritesFail: once another store's Assign of p returned, every
	// write (Begin, Mark, Done) for p by the earlier owner returns
	// dedupe.ErrFenced; a Done that returns before its write is
	// acknowledged may leave that to the next call for p. Without it such a write may also return nil, as
	// long as no later owner sees it; the suite checks what later owners
	// see either way.
	FencedWritesFail bool
	// DoneKeepsOnlyExpiry: a done key is kept as done and its expiry only
	// (Attempts 0, no Markers), which is all the consumer reads of it.
	DoneKeepsOnlyExpiry bool
}

type suiteCase struct {
	name string
	run  func(t *testing.T, h *Harness, f Features)
}

// Run runs the conformance suite: each case is a subtest with a harness of
// its own from newHarness.
func Run(t *testing.T, newHarness func(t *testing.T) *Harness, f Features) {
	cases := []suiteCase{
		{"attempts grow with each Begin and survive a reopen", attemptsSurviveReopen},
		{"a key begun but never done is handed out again", failedKeyComesBack},
		{"Begin returns entries in the order of keys", beginOrder},
		{"a key given twice in one Begin is one delivery and Done of it twice is harmless", duplicateKeyInABatch},
		{"Lookup returns entries without changing them", lookupChangesNothing},
		{"done keys are returned done and not incremented", doneKeys},
		{"markers come back after a reopen in order without duplicates", markersSurvive},
		{"Mark refuses an empty marker name", emptyMarker},
		{"entries are forgotten once the retention has passed since their last write", expiry},
		{"partitions sharing key names are independent under concurrent use", concurrentPartitions},
		{"a reopened store sees what a closed one wrote", reopenSeesAll},
		{"writes of a fenced owner do not change what later owners see", fencing},
		{"of two stores assigned the same partition at once exactly one keeps it", concurrentAssign},
		{"calls after Release return ErrNotAssigned", released},
		{"calls after Close return ErrClosed", closed},
		{"a cancelled context fails the call", cancelled},
		{"malformed stored entries are reported and skipped", malformed},
		{"a store refused a partition gets it back with Assign and sees the latest state", refusedPartitionRecovers},
		{"entries written by a newer version are read with the fields this version knows", forwardCompatible},
		{"a bounded store forgets the oldest keys first and counts them", boundedMemory},
		{"an OffsetStore's fallback keys given by offset are the keys of their strings", offsetKeysAreTheirStrings},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			if h.Open == nil || h.Topic == "" || h.Partitions < 2 || h.Retention <= 0 {
				t.Fatalf("dedupetest: the harness needs Open, Topic, Partitions >= 2 and Retention > 0; got Open set %v, Topic %q, Partitions %d, Retention %v",
					h.Open != nil, h.Topic, h.Partitions, h.Retention)
			}
			c.run(t, h, f)
		})
	}
}

// attemptsSurviveReopen guards against a store that counts deliveries in
// memory only, or loses the count on restart: a record that crashes the
// process each time it is handled would then never reach MaxAttempts and the
// dead-letter topic (DESIGN section 4).
func attemptsSurviveReopen(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	s1 := open(t, h, p)
	want(t, f, "first Begin of k", begin(t, s1, p, "k")[0], st{attempts: 1})
	want(t, f, "second Begin of k", begin(t, s1, p, "k")[0], st{attempts: 2})
	es := begin(t, s1, p, "k", "j")
	want(t, f, "third Begin of k", es[0], st{attempts: 3})
	want(t, f, "first Begin of j", es[1], st{attempts: 1})
	closeStore(t, s1)

	s2 := open(t, h, p)
	es = lookup(t, s2, p, "k", "j")
	want(t, f, "k after the reopen", es[0], st{attempts: 3})
	want(t, f, "j after the reopen", es[1], st{attempts: 1})
	es = begin(t, s2, p, "k", "j")
	want(t, f, "Begin of k after the reopen", es[0], st{attempts: 4})
	want(t, f, "Begin of j after the reopen", es[1], st{attempts: 2})
}

// failedKeyComesBack guards against Watermill's deduplicator flaw, which
// invariant 5 forbids: recording a key as seen before the handler runs, so
// that a message whose handling failed is dropped when it is redelivered.
// Only Done may make a key skipped; Begin merely counts.
func failedKeyComesBack(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	s1 := open(t, h, p)
	want(t, f, "first delivery", begin(t, s1, p, "k")[0], st{attempts: 1})
	// The handler fails: no Done. The partition moves to another member.
	s1.Release(p)
	closeStore(t, s1)

	s2 := open(t, h, p)
	want(t, f, "redelivery", begin(t, s2, p, "k")[0], st{attempts: 2})
	want(t, f, "same member, next retry", begin(t, s2, p, "k")[0], st{attempts: 3})
}

// beginOrder guards against a store that returns entries in map or storage
// order instead of the order of keys (record i would get the attempts and
// markers of record j).
func beginOrder(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	s := open(t, h, p)
	begin(t, s, p, "d")
	done(t, s, p, "d")
	begin(t, s, p, "a")

	es := begin(t, s, p, "n1", "d", "a", "n2")
	want(t, f, "n1 (first)", es[0], st{attempts: 1})
	want(t, f, "d (done)", es[1], st{attempts: 1, done: true})
	want(t, f, "a (second Begin)", es[2], st{attempts: 2})
	want(t, f, "n2 (first)", es[3], st{attempts: 1})

	if es := begin(t, s, p); len(es) != 0 {
		t.Errorf("Begin with no keys returned %d entries, want none", len(es))
	}
}

// lookupChangesNothing guards against a Lookup that counts (the consumer
// reads a batch with Lookup and counts only what it hands out, so a counting
// Lookup would double every attempt) or that invents entries for unknown
// keys.
func lookupChangesNothing(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	s1 := open(t, h, p)
	begin(t, s1, p, "k")
	begin(t, s1, p, "d")
	done(t, s1, p, "d")
	for i := range 3 {
		es := lookup(t, s1, p, "k", "unknown", "d")
		want(t, f, fmt.Sprintf("k, Lookup %d", i+1), es[0], st{attempts: 1})
		want(t, f, fmt.Sprintf("unknown, Lookup %d", i+1), es[1], st{})
		if !es[1].Expires.IsZero() {
			t.Errorf("unknown key: Expires %v, want the zero dedupe.Entry", es[1].Expires)
		}
		want(t, f, fmt.Sprintf("d, Lookup %d", i+1), es[2], st{attempts: 1, done: true})
	}
	if es := lookup(t, s1, p); len(es) != 0 {
		t.Errorf("Lookup with no keys returned %d entries, want none", len(es))
	}
	closeStore(t, s1)

	s2 := open(t, h, p)
	es := lookup(t, s2, p, "k", "unknown")
	want(t, f, "k after the reopen", es[0], st{attempts: 1})
	want(t, f, "unknown after the reopen", es[1], st{})
	want(t, f, "Begin of k after the Lookups", begin(t, s2, p, "k")[0], st{attempts: 2})
}

// doneKeys guards invariant 5: a key recorded done must not reach the
// handler again within the retention, here or after a restart, and skipping
// it must not count as a delivery (a done key would otherwise climb towards
// MaxAttempts and be dead-lettered although it succeeded).
func doneKeys(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	s1 := open(t, h, p)
	begin(t, s1, p, "k")
	done(t, s1, p, "k")
	want(t, f, "Begin after Done", begin(t, s1, p, "k")[0], st{attempts: 1, done: true})
	want(t, f, "Begin again after Done", begin(t, s1, p, "k")[0], st{attempts: 1, done: true})
	done(t, s1, p, "k") // a second Done changes nothing
	// Done without Begin: the record was dead-lettered or handled elsewhere.
	done(t, s1, p, "never-begun")
	done(t, s1, p) // no keys
	closeStore(t, s1)

	s2 := open(t, h, p)
	es := lookup(t, s2, p, "k", "never-begun")
	want(t, f, "k after the reopen", es[0], st{attempts: 1, done: true})
	want(t, f, "never-begun after the reopen", es[1], st{attempts: 0, done: true})
	es = begin(t, s2, p, "k", "never-begun")
	want(t, f, "Begin of k after the reopen", es[0], st{attempts: 1, done: true})
	want(t, f, "Begin of never-begun after the reopen", es[1], st{attempts: 0, done: true})
}

// markersSurvive guards against markers lost on restart (a replay then
// repeats a step the handler had finished: a customer charged twice),
// reordered, duplicated by a second Mark, or aliased with the store's own
// copy so that a handler editing an entry edits the store.
func markersSurvive(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	s1 := open(t, h, p)
	begin(t, s1, p, "k")
	mark(t, s1, p, "k", "charged")
	mark(t, s1, p, "k", "emailed")
	mark(t, s1, p, "k", "charged")
	es := begin(t, s1, p, "k")
	want(t, f, "k", es[0], st{attempts: 2, markers: []string{"charged", "emailed"}})
	if len(es[0].Markers) > 0 {
		es[0].Markers[0] = "edited by the caller"
	}
	want(t, f, "k after the caller edited its copy", lookup(t, s1, p, "k")[0], st{attempts: 2, markers: []string{"charged", "emailed"}})
	mark(t, s1, p, "unbegun", "m") // Mark of a key never begun
	done(t, s1, p, "k")
	closeStore(t, s1)

	s2 := open(t, h, p)
	es = lookup(t, s2, p, "k", "unbegun")
	want(t, f, "k after the reopen", es[0], st{attempts: 2, done: true, markers: []string{"charged", "emailed"}})
	want(t, f, "unbegun after the reopen", es[1], st{markers: []string{"m"}})
	mark(t, s2, p, "unbegun", "n")
	es = begin(t, s2, p, "unbegun")
	want(t, f, "unbegun after a second marker", es[0], st{attempts: 1, markers: []string{"m", "n"}})
}

// emptyMarker guards against a store writing an entry that it (or another
// store) would read back as malformed and skip, losing the key's state.
func emptyMarker(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	s := open(t, h, p)
	begin(t, s, p, "k")
	if err := s.Mark(testContext(t), p, "k", ""); err == nil {
		t.Errorf("Mark with an empty marker returned nil, want an error")
	}
	want(t, f, "k after the refused Mark", lookup(t, s, p, "k")[0], st{attempts: 1})
}

// expiry guards against a store that never forgets (unbounded growth), one
// that measures the age from the first write instead of the last (a key
// still being retried would be forgotten mid-way), and a loader that brings
// expired entries back after a restart.
func expiry(t *testing.T, h *Harness, f Features) {
	if h.Advance == nil {
		t.Skip("the harness cannot advance the stores' clock")
	}
	p0, p1 := part(h, 0), part(h, 1)
	s1 := open(t, h, p0, p1)
	for _, p := range []dedupe.Partition{p0, p1} {
		begin(t, s1, p, "old", "fresh", "d")
		done(t, s1, p, "d")
	}
	h.Advance(h.Retention / 2)
	for _, p := range []dedupe.Partition{p0, p1} {
		want(t, f, "fresh, rewritten half-way", begin(t, s1, p, "fresh")[0], st{attempts: 2})
	}
	// old and d were last written a minute more than the retention ago,
	// fresh about half the retention ago.
	h.Advance(h.Retention/2 + time.Minute)

	// In the running store.
	es := lookup(t, s1, p1, "old", "fresh", "d")
	want(t, f, "old, expired (running store)", es[0], st{})
	want(t, f, "fresh (running store)", es[1], st{attempts: 2})
	want(t, f, "d, expired (running store)", es[2], st{})
	es = begin(t, s1, p1, "old", "fresh", "d")
	want(t, f, "Begin of old (running store)", es[0], st{attempts: 1})
	want(t, f, "Begin of fresh (running store)", es[1], st{attempts: 3})
	want(t, f, "Begin of d (running store)", es[2], st{attempts: 1})
	closeStore(t, s1)

	// After a reopen: the loader must not bring them back.
	s2 := open(t, h, p0)
	es = lookup(t, s2, p0, "old", "fresh", "d")
	want(t, f, "old, expired (reopened)", es[0], st{})
	want(t, f, "fresh (reopened)", es[1], st{attempts: 2})
	want(t, f, "d, expired (reopened)", es[2], st{})
	es = begin(t, s2, p0, "old", "fresh", "d")
	want(t, f, "Begin of old (reopened)", es[0], st{attempts: 1})
	want(t, f, "Begin of fresh (reopened)", es[1], st{attempts: 3})
	want(t, f, "Begin of d (reopened)", es[2], st{attempts: 1})
}

// concurrentPartitions guards against cross-talk between partitions whose
// records carry the same keys (a store keyed by key alone would mix their
// counts), and against data races between the workers of different
// partitions calling one store at once (run with -race).
func concurrentPartitions(t *testing.T, h *Harness, f Features) {
	const rounds = 5
	s1 := h.Open(t)
	ctx := testContext(t)
	forEachPartition(h, func(i int32, p dedupe.Partition) {
		if err := s1.Assign(ctx, p); err != nil {
			t.Errorf("%v: Assign: %v", p, err)
			return
		}
		for r := 1; r <= rounds; r++ {
			es, err := s1.Begin(ctx, p, []string{"a", "b", "c"})
			if err != nil {
				t.Errorf("%v: Begin in round %d: %v", p, r, err)
				return
			}
			if len(es) != 3 {
				t.Errorf("%v: Begin returned %d entries, want 3", p, len(es))
				return
			}
			wantC := st{attempts: 1, done: r > 1}
			want(t, f, fmt.Sprintf("%v: a in round %d", p, r), es[0], st{attempts: r, markers: markersUpTo(i, r-1)})
			want(t, f, fmt.Sprintf("%v: b in round %d", p, r), es[1], st{attempts: r})
			want(t, f, fmt.Sprintf("%v: c in round %d", p, r), es[2], wantC)
			if err := s1.Mark(ctx, p, "a", fmt.Sprintf("p%d-r%d", i, r)); err != nil {
				t.Errorf("%v: Mark in round %d: %v", p, r, err)
				return
			}
			if r == 1 {
				if err := s1.Done(ctx, p, []string{"c"}); err != nil {
					t.Errorf("%v: Done: %v", p, err)
					return
				}
			}
		}
	})
	if t.Failed() {
		return
	}
	closeStore(t, s1)

	s2 := h.Open(t)
	forEachPartition(h, func(i int32, p dedupe.Partition) {
		if err := s2.Assign(ctx, p); err != nil {
			t.Errorf("%v: Assign after the reopen: %v", p, err)
			return
		}
		es, err := s2.Lookup(ctx, p, []string{"a", "b", "c"})
		if err != nil || len(es) != 3 {
			t.Errorf("%v: Lookup after the reopen: %d entries, %v", p, len(es), err)
			return
		}
		want(t, f, fmt.Sprintf("%v: a after the reopen", p), es[0], st{attempts: rounds, markers: markersUpTo(i, rounds)})
		want(t, f, fmt.Sprintf("%v: b after the reopen", p), es[1], st{attempts: rounds})
		want(t, f, fmt.Sprintf("%v: c after the reopen", p), es[2], st{attempts: 1, done: true})
	})
}

// markersUpTo returns the markers partition i's worker in
// concurrentPartitions wrote in rounds 1 to r.
func markersUpTo(i int32, r int) []string {
	var ms []string
	for k := 1; k <= r; k++ {
		ms = append(ms, fmt.Sprintf("p%d-r%d", i, k))
	}
	return ms
}

// reopenSeesAll guards against state that lives only in the process that
// wrote it, or that Release deletes: after a restart or a rebalance the next
// owner must see attempts, markers and done exactly as they were left.
func reopenSeesAll(t *testing.T, h *Harness, f Features) {
	p0, p1 := part(h, 0), part(h, 1)
	keys := []string{"a", "b", "c", "z"}
	s1 := open(t, h, p0, p1)
	begin(t, s1, p0, "a", "b", "c")
	begin(t, s1, p0, "a")
	mark(t, s1, p0, "b", "x")
	mark(t, s1, p0, "b", "y")
	done(t, s1, p0, "c")
	begin(t, s1, p1, "a")
	done(t, s1, p1, "a")
	mark(t, s1, p1, "z", "m")
	before0 := lookup(t, s1, p0, keys...)
	before1 := lookup(t, s1, p1, keys...)
	s1.Release(p1) // Release drops what is held in memory, never the stored state
	closeStore(t, s1)

	s2 := open(t, h, p0, p1)
	after0 := lookup(t, s2, p0, keys...)
	after1 := lookup(t, s2, p1, keys...)
	wants0 := []st{{attempts: 2}, {attempts: 1, markers: []string{"x", "y"}}, {attempts: 1, done: true}, {}}
	wants1 := []st{{attempts: 1, done: true}, {}, {}, {markers: []string{"m"}}}
	for i, k := range keys {
		want(t, f, fmt.Sprintf("%v key %s before the reopen", p0, k), before0[i], wants0[i])
		want(t, f, fmt.Sprintf("%v key %s after the reopen", p0, k), after0[i], wants0[i])
		sameExpiry(t, fmt.Sprintf("%v key %s", p0, k), before0[i], after0[i])
		want(t, f, fmt.Sprintf("%v key %s before the reopen", p1, k), before1[i], wants1[i])
		want(t, f, fmt.Sprintf("%v key %s after the reopen", p1, k), after1[i], wants1[i])
		sameExpiry(t, fmt.Sprintf("%v key %s", p1, k), before1[i], after1[i])
	}
}

// fencing guards against a zombie (a member that lost the partition but is
// still running) overwriting the new owner's entries: marking done a key
// whose handler failed for the new owner, adding markers for steps the new
// owner has not done, or counting deliveries that did not happen. The
// zombie keeps working on the partitions it still owns.
func fencing(t *testing.T, h *Harness, f Features) {
	p, q := part(h, 0), part(h, 1)
	ctx := testContext(t)
	s1 := open(t, h, p, q)
	begin(t, s1, p, "k", "z")
	mark(t, s1, p, "k", "one")

	s2 := open(t, h, p) // a rebalance: s1 is a zombie for p from here
	checkFenced := func(op string, err error) {
		t.Helper()
		switch {
		case err == nil && f.FencedWritesFail:
			t.Errorf("zombie %s returned nil, want ErrFenced", op)
		case err != nil && !errors.Is(err, dedupe.ErrFenced):
			t.Errorf("zombie %s: %v, want ErrFenced or nil", op, err)
		}
	}
	_, err := s1.Begin(ctx, p, []string{"k", "fresh"})
	checkFenced("Begin", err)
	checkFenced("Mark", s1.Mark(ctx, p, "k", "zombie"))
	checkFenced("Done", s1.Done(ctx, p, []string{"k", "z"}))
	want(t, f, "the zombie's own partition q", begin(t, s1, q, "k")[0], st{attempts: 1})

	es := lookup(t, s2, p, "k", "z", "fresh")
	want(t, f, "k, new owner", es[0], st{attempts: 1, markers: []string{"one"}})
	want(t, f, "z, new owner", es[1], st{attempts: 1})
	want(t, f, "fresh, new owner", es[2], st{})
	es = begin(t, s2, p, "k", "z", "fresh")
	want(t, f, "Begin of k, new owner", es[0], st{attempts: 2, markers: []string{"one"}})
	want(t, f, "Begin of z, new owner", es[1], st{attempts: 2})
	want(t, f, "Begin of fresh, new owner", es[2], st{attempts: 1})
	closeStore(t, s2)

	// The zombie writes again while nobody holds p.
	_, err = s1.Begin(ctx, p, []string{"k", "fresh"})
	checkFenced("Begin after the owner closed", err)
	checkFenced("Done after the owner closed", s1.Done(ctx, p, []string{"k", "fresh"}))

	s3 := open(t, h, p)
	es = lookup(t, s3, p, "k", "z", "fresh")
	want(t, f, "k, third owner", es[0], st{attempts: 2, markers: []string{"one"}})
	want(t, f, "z, third owner", es[1], st{attempts: 2})
	want(t, f, "fresh, third owner", es[2], st{attempts: 1})
}

// concurrentAssign guards against two members that load the partition
// during overlapping rebalances both ending up owners (two owner claims
// that neither fences), so that both count and mark the same keys.
func concurrentAssign(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	ctx := testContext(t)
	stores := []dedupe.Store{h.Open(t), h.Open(t)}
	errs := make([]error, 2)
	finished := make(chan struct{}, 2)
	for i, s := range stores {
		go func() {
			defer func() { finished <- struct{}{} }()
			errs[i] = s.Assign(ctx, p)
		}()
	}
	<-finished
	<-finished
	for i, err := range errs {
		if err != nil {
			t.Fatalf("store %d: Assign: %v", i, err)
		}
	}
	keys := []string{"by-0", "by-1"}
	for i, s := range stores {
		_, errs[i] = s.Begin(ctx, p, keys[i:i+1])
		if errs[i] != nil && !errors.Is(errs[i], dedupe.ErrFenced) {
			t.Fatalf("store %d: Begin: %v, want nil or ErrFenced", i, errs[i])
		}
	}
	fenced := 0
	for _, err := range errs {
		if err != nil {
			fenced++
		}
	}
	if fenced == 2 || (f.FencedWritesFail && fenced != 1) {
		t.Fatalf("Begin errors %v, want exactly one ErrFenced (or, without FencedWritesFail, at most one)", errs)
	}

	s3 := open(t, h, p)
	es := lookup(t, s3, p, keys...)
	winners := 0
	for i, e := range es {
		if e.Attempts == 1 {
			winners++
			if errs[i] != nil {
				t.Errorf("the write of store %d returned %v, yet a later owner sees it", i, errs[i])
			}
		} else {
			want(t, f, "the loser's key", e, st{})
		}
	}
	if winners != 1 {
		t.Errorf("a later owner sees %d of the two stores' writes (%+v), want exactly one", winners, es)
	}
}

// released guards against a store that keeps serving and writing a
// partition after it was revoked (a member that lost a partition would go
// on counting for it) or that cannot take a partition back later.
func released(t *testing.T, h *Harness, f Features) {
	p, q := part(h, 0), part(h, 1)
	s := h.Open(t)
	wantErr(t, "before Assign", s, p, dedupe.ErrNotAssigned)
	assign(t, s, p, q)
	begin(t, s, p, "k")
	s.Release(p)
	wantErr(t, "after Release", s, p, dedupe.ErrNotAssigned)
	s.Release(p)              // a second Release is harmless
	s.Release(part(h, 1_000)) // so is releasing a partition never assigned
	begin(t, s, q, "k")       // the other partition is still served
	assign(t, s, p)           // and p can come back
	es := lookup(t, s, p, "k")
	want(t, f, "k after p came back", es[0], st{attempts: 1})
	want(t, f, "Begin of k after p came back", begin(t, s, p, "k")[0], st{attempts: 2})
}

// closed guards against a store that accepts calls after Close and drops
// their writes silently, or panics on its closed connections.
func closed(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	s := open(t, h, p)
	begin(t, s, p, "k")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantErr(t, "after Close", s, p, dedupe.ErrClosed)
	if err := s.Assign(testContext(t), p); !errors.Is(err, dedupe.ErrClosed) {
		t.Errorf("Assign after Close: %v, want ErrClosed", err)
	}
	_ = s.Close() // a second Close must not panic
}

// cancelled guards against a store that ignores its context and so blocks
// a worker that is being stopped, or counts a delivery the caller gave up.
func cancelled(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	s := h.Open(t)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Assign(gone, p); !errors.Is(err, context.Canceled) {
		t.Errorf("Assign with a cancelled context: %v, want context.Canceled", err)
	}
	assign(t, s, p)
	if _, err := s.Begin(gone, p, []string{"k"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Begin with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := s.Lookup(gone, p, []string{"k"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Lookup with a cancelled context: %v, want context.Canceled", err)
	}
	if err := s.Mark(gone, p, "k", "m"); !errors.Is(err, context.Canceled) {
		t.Errorf("Mark with a cancelled context: %v, want context.Canceled", err)
	}
	if err := s.Done(gone, p, []string{"k"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Done with a cancelled context: %v, want context.Canceled", err)
	}
	want(t, f, "k after the cancelled calls", begin(t, s, p, "k")[0], st{attempts: 1})
}

// malformed guards against a store that crashes, refuses to load the
// partition, or stops it when it meets a stored entry it cannot read (a
// corrupted record, one written by a newer version): the contract is to
// report it and skip it, and to keep working for that key and the others.
func malformed(t *testing.T, h *Harness, f Features) {
	if h.InjectMalformed == nil || h.Malformed == nil {
		t.Skip("the harness cannot inject malformed entries")
	}
	p := part(h, 0)
	s1 := open(t, h, p)
	begin(t, s1, p, "good")
	closeStore(t, s1)

	h.InjectMalformed(t, p, "bad")
	s2 := open(t, h, p)
	es := begin(t, s2, p, "good", "bad")
	want(t, f, "good, next to a malformed entry", es[0], st{attempts: 2})
	want(t, f, "bad, skipped", es[1], st{attempts: 1})
	if n := h.Malformed(s2); n < 1 {
		t.Errorf("the store reported %d malformed entries, want at least 1", n)
	}
	mark(t, s2, p, "bad", "m")
	done(t, s2, p, "bad")
	closeStore(t, s2)

	s3 := open(t, h, p)
	es = lookup(t, s3, p, "good", "bad")
	want(t, f, "good after the reopen", es[0], st{attempts: 2})
	want(t, f, "bad, rewritten after being skipped", es[1], st{attempts: 1, done: true, markers: []string{"m"}})
}

// duplicateKeyInABatch guards a key twice in one batch (a producer retry
// landing next to the original): a store that counted it twice reported
// attempts 2 on its first delivery, and with MaxAttempts such copies were
// dead-lettered as if they had failed. One Begin is one delivery of each key
// it names.
func duplicateKeyInABatch(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	s1 := open(t, h, p)
	es := begin(t, s1, p, "k", "j", "k")
	want(t, f, "k (first copy)", es[0], st{attempts: 1})
	want(t, f, "j", es[1], st{attempts: 1})
	want(t, f, "k (second copy)", es[2], st{attempts: 1})
	es = begin(t, s1, p, "k", "k")
	want(t, f, "k, second Begin, first copy", es[0], st{attempts: 2})
	want(t, f, "k, second Begin, second copy", es[1], st{attempts: 2})
	done(t, s1, p, "k", "k")
	es = begin(t, s1, p, "k", "j", "k")
	want(t, f, "k after Done (first copy)", es[0], st{attempts: 2, done: true})
	want(t, f, "j, third Begin", es[1], st{attempts: 2})
	want(t, f, "k after Done (second copy)", es[2], st{attempts: 2, done: true})
	closeStore(t, s1)

	s2 := open(t, h, p)
	es = lookup(t, s2, p, "k", "j")
	want(t, f, "k after the reopen", es[0], st{attempts: 2, done: true})
	want(t, f, "j after the reopen", es[1], st{attempts: 2})
}

// refusedPartitionRecovers guards a member whose store refused a partition
// (another store claimed it; a test or a misconfiguration ran two consumers
// on one store): the consumer claims the partition again with Assign, so
// Assign must take it back from the newer owner, load what that owner
// wrote, and fence it in turn.
func refusedPartitionRecovers(t *testing.T, h *Harness, f Features) {
	p := part(h, 0)
	ctx := testContext(t)
	s1 := open(t, h, p)
	begin(t, s1, p, "k")
	s2 := open(t, h, p)
	want(t, f, "k, second owner", begin(t, s2, p, "k")[0], st{attempts: 2})
	done(t, s2, p, "d")
	// The next batch's Begin: a Done may return before its write is
	// durable, and is durable once the partition's next write returned.
	begin(t, s2, p, "e")
	_, err := s1.Begin(ctx, p, []string{"k"})
	if f.FencedWritesFail && !errors.Is(err, dedupe.ErrFenced) {
		t.Fatalf("Begin of the refused owner: %v, want ErrFenced", err)
	}

	assign(t, s1, p) // claimed again
	es := lookup(t, s1, p, "k", "d")
	want(t, f, "k, claimed again", es[0], st{attempts: 2})
	want(t, f, "d, claimed again", es[1], st{done: true})
	want(t, f, "Begin of k, claimed again", begin(t, s1, p, "k")[0], st{attempts: 3})
	mark(t, s1, p, "k", "m")
	_, err = s2.Begin(ctx, p, []string{"k"})
	if f.FencedWritesFail && !errors.Is(err, dedupe.ErrFenced) {
		t.Fatalf("Begin of the owner claimed from: %v, want ErrFenced", err)
	}
	closeStore(t, s1)
	closeStore(t, s2)

	s3 := open(t, h, p)
	want(t, f, "k after both closed", lookup(t, s3, p, "k")[0], st{attempts: 3, markers: []string{"m"}})
}

// forwardCompatible guards rolling upgrades: a store that refused entries
// with fields or flags it does not know stopped an old member on the first
// entry a newer member wrote (or skipped the key, handing a done record out
// again). Unknown fields are skipped, the known ones read.
func forwardCompatible(t *testing.T, h *Harness, f Features) {
	if h.InjectFuture == nil {
		t.Skip("the harness has no encoding to extend")
	}
	p := part(h, 0)
	s1 := open(t, h, p)
	begin(t, s1, p, "old")
	closeStore(t, s1)

	h.InjectFuture(t, p, "new")
	s2 := open(t, h, p)
	es := lookup(t, s2, p, "old", "new")
	want(t, f, "old", es[0], st{attempts: 1})
	want(t, f, "new, written by a newer version", es[1], st{attempts: 2, markers: []string{"m"}})
	if h.Malformed != nil {
		if n := h.Malformed(s2); n != 0 {
			t.Errorf("%d entries reported malformed, want none", n)
		}
	}
	want(t, f, "Begin of new", begin(t, s2, p, "new")[0], st{attempts: 3, markers: []string{"m"}})
}

// boundedMemory guards the bound on what a store holds: without it a
// store holding every key of its retention grows without limit; a bound
// that forgot the newest keys first would hand out again records done a
// moment ago. A forgotten key is at-least-once (handed out again), never
// a loss, and is counted.
func boundedMemory(t *testing.T, h *Harness, f Features) {
	if h.OpenBounded == nil || h.Forgotten == nil {
		t.Skip("the harness cannot open a bounded store")
	}
	const bound, rounds, per = 100, 40, 10
	p := part(h, 0)
	s := h.OpenBounded(t, bound)
	assign(t, s, p)
	key := func(i int) string { return fmt.Sprintf("k%04d", i) }
	for r := range rounds {
		keys := make([]string, per)
		for i := range keys {
			keys[i] = key(r*per + i)
		}
		begin(t, s, p, keys...)
		done(t, s, p, keys...)
		if h.Advance != nil {
			h.Advance(time.Second)
		}
	}
	n := rounds * per
	if got := h.Forgotten(s); got < int64(n-2*bound) {
		t.Errorf("forgot %d keys of %d with a bound of %d, want at least %d", got, n, bound, n-2*bound)
	}
	recent := make([]string, bound/2)
	for i := range recent {
		recent[i] = key(n - len(recent) + i)
	}
	for i, e := range lookup(t, s, p, recent...) {
		want(t, f, "recent key "+recent[i], e, st{attempts: 1, done: true})
	}
	if e := lookup(t, s, p, key(0))[0]; e.Done {
		t.Errorf("the oldest key is still done with %d keys written and a bound of %d", n, bound)
	}
}

// st is the part of a dedupe.Entry the suite checks exactly.
type st struct {
	attempts int
	done     bool
	markers  []string
}

func want(t *testing.T, f Features, what string, got dedupe.Entry, w st) {
	t.Helper()
	if f.DoneKeepsOnlyExpiry && w.done && got.Done {
		if got.Attempts != 0 || len(got.Markers) != 0 {
			t.Errorf("%s: a done key kept attempts %d and markers %q", what, got.Attempts, got.Markers)
		}
		return
	}
	if got.Attempts != w.attempts || got.Done != w.done || !slices.Equal(got.Markers, w.markers) {
		t.Errorf("%s: got attempts %d, done %v, markers %q; want attempts %d, done %v, markers %q",
			what, got.Attempts, got.Done, got.Markers, w.attempts, w.done, w.markers)
	}
}

// sameExpiry checks that a reopen kept Expires (to the second: stores may
// keep less precision).
func sameExpiry(t *testing.T, what string, before, after dedupe.Entry) {
	t.Helper()
	d := before.Expires.Sub(after.Expires)
	if before.Expires.IsZero() != after.Expires.IsZero() || d > time.Second || d < -time.Second {
		t.Errorf("%s: Expires %v before the reopen, %v after", what, before.Expires, after.Expires)
	}
}

func wantErr(t *testing.T, when string, s dedupe.Store, p dedupe.Partition, target error) {
	t.Helper()
	ctx := testContext(t)
	if _, err := s.Begin(ctx, p, []string{"k"}); !errors.Is(err, target) {
		t.Errorf("Begin %s: %v, want %v", when, err, target)
	}
	if _, err := s.Lookup(ctx, p, []string{"k"}); !errors.Is(err, target) {
		t.Errorf("Lookup %s: %v, want %v", when, err, target)
	}
	if err := s.Mark(ctx, p, "k", "m"); !errors.Is(err, target) {
		t.Errorf("Mark %s: %v, want %v", when, err, target)
	}
	if err := s.Done(ctx, p, []string{"k"}); !errors.Is(err, target) {
		t.Errorf("Done %s: %v, want %v", when, err, target)
	}
}

func part(h *Harness, i int32) dedupe.Partition {
	return dedupe.Partition{Topic: h.Topic, Partition: i}
}

// forEachPartition runs fn for every partition of the harness, each in a
// goroutine of its own, and waits for them.
func forEachPartition(h *Harness, fn func(i int32, p dedupe.Partition)) {
	done := make(chan struct{})
	for i := range h.Partitions {
		go func() {
			defer func() { done <- struct{}{} }()
			fn(i, part(h, i))
		}()
	}
	for range h.Partitions {
		<-done
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// open opens a store and assigns it ps.
func open(t *testing.T, h *Harness, ps ...dedupe.Partition) dedupe.Store {
	t.Helper()
	s := h.Open(t)
	assign(t, s, ps...)
	return s
}

func assign(t *testing.T, s dedupe.Store, ps ...dedupe.Partition) {
	t.Helper()
	for _, p := range ps {
		if err := s.Assign(testContext(t), p); err != nil {
			t.Fatalf("Assign(%v): %v", p, err)
		}
	}
}

func closeStore(t *testing.T, s dedupe.Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func begin(t *testing.T, s dedupe.Store, p dedupe.Partition, keys ...string) []dedupe.Entry {
	t.Helper()
	es, err := s.Begin(testContext(t), p, keys)
	if err != nil {
		t.Fatalf("Begin(%v, %q): %v", p, keys, err)
	}
	if len(es) != len(keys) {
		t.Fatalf("Begin(%v, %q) returned %d entries, want %d", p, keys, len(es), len(keys))
	}
	return es
}

func lookup(t *testing.T, s dedupe.Store, p dedupe.Partition, keys ...string) []dedupe.Entry {
	t.Helper()
	es, err := s.Lookup(testContext(t), p, keys)
	if err != nil {
		t.Fatalf("Lookup(%v, %q): %v", p, keys, err)
	}
	if len(es) != len(keys) {
		t.Fatalf("Lookup(%v, %q) returned %d entries, want %d", p, keys, len(es), len(keys))
	}
	return es
}

func mark(t *testing.T, s dedupe.Store, p dedupe.Partition, key, marker string) {
	t.Helper()
	if err := s.Mark(testContext(t), p, key, marker); err != nil {
		t.Fatalf("Mark(%v, %q, %q): %v", p, key, marker, err)
	}
}

func done(t *testing.T, s dedupe.Store, p dedupe.Partition, keys ...string) {
	t.Helper()
	if err := s.Done(testContext(t), p, keys); err != nil {
		t.Fatalf("Done(%v, %q): %v", p, keys, err)
	}
}
