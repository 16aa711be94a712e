package kafkastore

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/internal/kafkatest"
)

// TestFirstDeliveriesByOffsetSeeEveryEarlierWrite guards BeginOffsets'
// short way for a first delivery of fallback keys: it must not take a key
// for new that was begun before (its attempts), that has an entry of its
// own (its markers), or that is done, and a refused write of it is retried
// like any Begin. Each step is checked again after a reload from the
// changelog.
func TestFirstDeliveriesByOffsetSeeEveryEarlierWrite(t *testing.T) {
	c := roundsCluster(t)
	ctx := testContext(t)
	p := dedupe.Partition{Topic: "orders", Partition: 0}
	s := assignedStore(t, ctx, c, p, Options{Group: "billing"})
	okey := func(o int64) string { return dedupe.OffsetKey(p.Topic, p.Partition, o) }
	begin := func(offs ...int64) []dedupe.Entry {
		t.Helper()
		out := make([]dedupe.Entry, len(offs))
		if err := s.BeginOffsets(ctx, p, make([]string, len(offs)), offs, out); err != nil {
			t.Fatalf("BeginOffsets %v: %v", offs, err)
		}
		return out
	}
	wantAttempts := func(what string, es []dedupe.Entry, n int) {
		t.Helper()
		for i, e := range es {
			if e.Attempts != n || e.Done {
				t.Errorf("%s: entry %d = %+v, want attempts %d", what, i, e, n)
			}
		}
	}

	// A first delivery refused by the broker once, then retried: one
	// delivery.
	refused := refuseNextProduce(c)
	out := make([]dedupe.Entry, 3)
	if err := s.BeginOffsets(ctx, p, []string{"", "", ""}, []int64{5, 6, 7}, out); err == nil {
		t.Fatal("BeginOffsets with its produce refused: no error")
	}
	<-refused
	wantAttempts("first delivery of 5..7, retried", begin(5, 6, 7), 1)
	es, err := s.Lookup(ctx, p, []string{okey(5), okey(6), okey(7)})
	if err != nil {
		t.Fatal(err)
	}
	wantAttempts("5..7 by string", es, 1)

	// Begun before: counted again, not taken for new.
	wantAttempts("second delivery of 5..7", begin(5, 6, 7), 2)

	// Offset 8 has an entry of its own (a marker), 9 is new: the marker
	// is kept and 8's count goes on from it.
	if err := s.Mark(ctx, p, okey(8), "charged"); err != nil {
		t.Fatal(err)
	}
	got := begin(8, 9)
	if got[0].Attempts != 1 || !slices.Equal(got[0].Markers, []string{"charged"}) {
		t.Errorf("offset 8 marked, then begun by offset: %+v, want attempts 1 and its marker", got[0])
	}
	wantAttempts("offset 9, new beside 8", got[1:], 1)

	// Done by offset: never counted again, before or after a reload.
	if err := s.DoneOffsets(ctx, p, make([]string, 5), []int64{5, 6, 7, 8, 9}); err != nil {
		t.Fatal(err)
	}
	for i, e := range begin(5, 9, 10) {
		if want := i < 2; e.Done != want || (!want && e.Attempts != 1) {
			t.Errorf("offsets 5, 9, 10 after 5..9 done: entry %d = %+v", i, e)
		}
	}
	wantDoneAfterLoad(t, ctx, c, p, []string{okey(5), okey(6), okey(7), okey(8), okey(9)})

	// A reload sees 10's one delivery.
	s2 := openStore(t, c.ListenAddrs(), Options{Group: "billing"})
	if err := s2.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	es, err = s2.Lookup(ctx, p, []string{okey(10)})
	if err != nil {
		t.Fatal(err)
	}
	wantAttempts("offset 10 after a reload", es, 1)

	// A first delivery's record (runs of offsets, with a gap) read by
	// the next owner.
	out = make([]dedupe.Entry, 4)
	if err := s2.BeginOffsets(ctx, p, make([]string, 4), []int64{20, 21, 22, 30}, out); err != nil {
		t.Fatal(err)
	}
	wantAttempts("first delivery of 20..22 and 30", out, 1)
	s3 := openStore(t, c.ListenAddrs(), Options{Group: "billing"})
	if err := s3.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := s3.LookupOffsets(ctx, p, make([]string, 4), []int64{20, 22, 30, 23}, out); err != nil {
		t.Fatal(err)
	}
	wantAttempts("20, 22 and 30 after a reload", out[:3], 1)
	wantAttempts("23, never begun, after a reload", out[3:], 0)
	if st := s3.Stats(); st.Malformed != 0 {
		t.Errorf("malformed records on a reload: %d", st.Malformed)
	}
}

// TestPartitionsWriteInOrderThroughSeveralProducers guards Options.Producers:
// each changelog partition is written through one producer client (its
// records in order, as the load rules need), the partitions are spread over
// the clients, and batches written concurrently on every partition all read
// back done.
func TestPartitionsWriteInOrderThroughSeveralProducers(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	ctx := testContext(t)
	const parts, rounds, batch = 6, 15, 10
	input := kafkatest.NewTopic(t, parts)
	group := kafkatest.NewGroup(t)
	deleteAtEnd(t, brokers, group+"."+input+".kbatch-dedupe")
	s := openStore(t, brokers, Options{Group: group, Producers: 3})
	if len(s.prods) != 3 || s.producer(0) != s.producer(3) || s.producer(0) == s.producer(1) || s.producer(1) == s.producer(2) {
		t.Fatalf("%d producers; partition 0, 1, 2, 3 write through %p %p %p %p", len(s.prods), s.producer(0), s.producer(1), s.producer(2), s.producer(3))
	}
	var wg sync.WaitGroup
	errs := make(chan error, parts)
	for p := range int32(parts) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dp := dedupe.Partition{Topic: input, Partition: p}
			if err := s.Assign(ctx, dp); err != nil {
				errs <- err
				return
			}
			keys, offs, out := make([]string, batch), make([]int64, batch), make([]dedupe.Entry, batch)
			for r := range rounds {
				for i := range offs {
					offs[i] = int64(r*batch + i)
				}
				if err := s.BeginOffsets(ctx, dp, keys, offs, out); err != nil {
					errs <- err
					return
				}
				if err := s.DoneOffsets(ctx, dp, keys, offs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, brokers, Options{Group: group, Producers: 2})
	keys, offs, out := make([]string, rounds*batch), make([]int64, rounds*batch), make([]dedupe.Entry, rounds*batch)
	for i := range offs {
		offs[i] = int64(i)
	}
	for p := range int32(parts) {
		dp := dedupe.Partition{Topic: input, Partition: p}
		if err := s2.Assign(ctx, dp); err != nil {
			t.Fatal(err)
		}
		if err := s2.LookupOffsets(ctx, dp, keys, offs, out); err != nil {
			t.Fatal(err)
		}
		for i, e := range out {
			if !e.Done {
				t.Fatalf("partition %d offset %d after a reload: %+v, want done", p, i, e)
			}
		}
	}
	if st := s2.Stats(); st.Malformed != 0 || st.Fenced != 0 {
		t.Errorf("reload: %d malformed, %d fenced records", st.Malformed, st.Fenced)
	}
}

// TestLookupOffsetsAboveEverythingHeld guards LookupOffsets' short way for
// a batch of fallback keys above every one the partition holds (a batch of
// first deliveries, answered without a look per key): a batch that reaches
// down to a key begun, done, begun out of order or with a record of its own
// must still see it.
func TestLookupOffsetsAboveEverythingHeld(t *testing.T) {
	c := roundsCluster(t)
	ctx := testContext(t)
	p := dedupe.Partition{Topic: "orders", Partition: 0}
	s := assignedStore(t, ctx, c, p, Options{Group: "billing"})
	lookup := func(offs ...int64) []dedupe.Entry {
		t.Helper()
		out := make([]dedupe.Entry, len(offs))
		for i := range out {
			out[i] = dedupe.Entry{Attempts: 99} // must be overwritten
		}
		if err := s.LookupOffsets(ctx, p, make([]string, len(offs)), offs, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	check := func(what string, es []dedupe.Entry, want ...dedupe.Entry) {
		t.Helper()
		for i := range es {
			if es[i].Attempts != want[i].Attempts || es[i].Done != want[i].Done {
				t.Errorf("%s: entry %d = %+v, want attempts %d done %t", what, i, es[i], want[i].Attempts, want[i].Done)
			}
		}
	}
	none, once, twice, done := dedupe.Entry{}, dedupe.Entry{Attempts: 1}, dedupe.Entry{Attempts: 2}, dedupe.Entry{Done: true}

	check("an empty partition", lookup(0, 1, 2), none, none, none)
	if err := s.BeginOffsets(ctx, p, make([]string, 3), []int64{0, 1, 2}, make([]dedupe.Entry, 3)); err != nil {
		t.Fatal(err)
	}
	check("reaching down to begun 2", lookup(2, 3, 4), once, none, none)
	check("above begun", lookup(3, 4), none, none)
	if err := s.DoneOffsets(ctx, p, make([]string, 3), []int64{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	check("reaching down to done 2", lookup(2, 3), done, none)
	check("above done", lookup(3, 4), none, none)

	// Begun twice: a record of its own.
	for range 2 {
		if err := s.BeginOffsets(ctx, p, make([]string, 1), []int64{10}, make([]dedupe.Entry, 1)); err != nil {
			t.Fatal(err)
		}
	}
	check("reaching down to 10, begun twice", lookup(10, 11), twice, none)
	if err := s.DoneOffsets(ctx, p, make([]string, 1), []int64{10}); err != nil {
		t.Fatal(err)
	}
	check("10 done", lookup(10, 11), done, none)

	// Begun out of order: below the spans, in the map of begun keys.
	if err := s.BeginOffsets(ctx, p, make([]string, 2), []int64{30, 31}, make([]dedupe.Entry, 2)); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginOffsets(ctx, p, make([]string, 1), []int64{20}, make([]dedupe.Entry, 1)); err != nil {
		t.Fatal(err)
	}
	check("20, begun below 30..31", lookup(20, 21), once, none)
	check("above 31", lookup(32, 33), none, none)
}

// TestDoneOffsetsWritesOneRunsRecordOnlyWhereItMay guards Done's short way
// for a batch of fallback keys above every key done: it must still delete
// the record of a key that has an entry of its own (a marker), and a key
// done already keeps its expiry when a later Done repeats it.
func TestDoneOffsetsWritesOneRunsRecordOnlyWhereItMay(t *testing.T) {
	c := roundsCluster(t)
	ctx := testContext(t)
	p := dedupe.Partition{Topic: "orders", Partition: 0}
	var mu sync.Mutex
	clock := time.Unix(1_800_000_000, 0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	s := assignedStore(t, ctx, c, p, Options{Group: "billing", Retention: time.Hour, Now: now})
	okey := func(o int64) string { return dedupe.OffsetKey(p.Topic, p.Partition, o) }
	offs := func(lo, hi int64) []int64 {
		var o []int64
		for ; lo <= hi; lo++ {
			o = append(o, lo)
		}
		return o
	}
	first := offs(0, 9)
	if err := s.BeginOffsets(ctx, p, make([]string, len(first)), first, make([]dedupe.Entry, len(first))); err != nil {
		t.Fatal(err)
	}
	if err := s.Mark(ctx, p, okey(3), "charged"); err != nil {
		t.Fatal(err)
	}
	if err := s.DoneOffsets(ctx, p, make([]string, len(first)), first); err != nil {
		t.Fatal(err)
	}
	ps := s.parts[p]
	ps.mu.Lock()
	_, held := ps.m[okey(3)]
	ps.mu.Unlock()
	if held {
		t.Error("offset 3's own entry (its marker) is still held after it was done")
	}
	es, err := s.Lookup(ctx, p, []string{okey(3)})
	if err != nil {
		t.Fatal(err)
	}
	if !es[0].Done || es[0].Markers != nil {
		t.Errorf("offset 3 after done: %+v, want done without markers", es[0])
	}

	// An hour later 5..12 are done: 10..12 are new, 5..9 keep the expiry
	// they were done with.
	mu.Lock()
	clock = clock.Add(30 * time.Minute)
	mu.Unlock()
	again := offs(5, 12)
	if err := s.DoneOffsets(ctx, p, make([]string, len(again)), again); err != nil {
		t.Fatal(err)
	}
	es, err = s.Lookup(ctx, p, []string{okey(5), okey(12)})
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Unix(1_800_000_000, 0).Add(time.Hour); !es[0].Done || !es[0].Expires.Equal(want) {
		t.Errorf("offset 5 done again: %+v, want done until %v", es[0], want)
	}
	if want := now().Add(time.Hour); !es[1].Done || !es[1].Expires.Equal(want) {
		t.Errorf("offset 12 done: %+v, want done until %v", es[1], want)
	}
	// A write waits for the Done rounds before it: then a load sees them.
	if err := s.BeginOffsets(ctx, p, []string{""}, []int64{20}, make([]dedupe.Entry, 1)); err != nil {
		t.Fatal(err)
	}
	wantDoneAfterLoad(t, ctx, c, p, []string{okey(3), okey(5), okey(12)})
}

// countClients counts the Kafka clients made with it among their options.
type countClients struct{ n atomic.Int64 }

func (c *countClients) OnNewClient(*kgo.Client) { c.n.Add(1) }

// TestReadsMakeNoClients guards the reads of Assign and of read-backs: they
// fetch through the store's own clients. A client made for each read read
// the metadata of every partition of the changelog before its first fetch,
// which for a member assigned 1024 partitions was gigabytes of allocations
// in one rebalance.
func TestReadsMakeNoClients(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(16, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := testContext(t)
	var count countClients
	opts := Options{Group: "billing", Producers: 2, ClientOpts: []kgo.Opt{kgo.WithHooks(&count)}}
	first := openStore(t, c.ListenAddrs(), opts)
	second := openStore(t, c.ListenAddrs(), opts)
	made := count.n.Load() // the producers of both
	for i := range int32(16) {
		p := dedupe.Partition{Topic: "orders", Partition: i}
		if err := first.Assign(ctx, p); err != nil {
			t.Fatal(err)
		}
		if _, err := first.Begin(ctx, p, []string{"k"}); err != nil {
			t.Fatal(err)
		}
		if err := first.Done(ctx, p, []string{"k"}); err != nil {
			t.Fatal(err)
		}
		first.Release(p)
		if err := second.Assign(ctx, p); err != nil { // reads what first wrote
			t.Fatal(err)
		}
		es, err := second.Lookup(ctx, p, []string{"k"})
		if err != nil || !es[0].Done {
			t.Fatalf("%v after a load: %+v, %v; want k done", p, es, err)
		}
	}
	if n := count.n.Load() - made; n != 0 {
		t.Errorf("32 Assigns made %d clients, want none", n)
	}
}

// TestReadsFollowAMovedLeader guards the store's cache of changelog
// leaders: the end offset lookup of a claim, and a read, whose cached
// leader no longer leads the partition must look the leader up again and
// ask the new one.
func TestReadsFollowAMovedLeader(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.SeedTopics(2, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := testContext(t)
	p := dedupe.Partition{Topic: "orders", Partition: 1}
	first := openStore(t, c.ListenAddrs(), Options{Group: "billing"})
	second := openStore(t, c.ListenAddrs(), Options{Group: "billing"})
	changelog := "billing.orders.kbatch-dedupe"
	for round, key := range []string{"a", "b", "c"} {
		if err := first.Assign(ctx, p); err != nil {
			t.Fatalf("round %d: Assign: %v", round, err)
		}
		if _, err := first.Begin(ctx, p, []string{key}); err != nil {
			t.Fatal(err)
		}
		if err := first.Done(ctx, p, []string{key}); err != nil {
			t.Fatal(err)
		}
		first.Release(p)
		// Both stores have the leader cached now (second from the
		// round before): move it.
		to := 1 - c.LeaderFor(changelog, p.Partition)
		if err := c.MoveTopicPartition(changelog, p.Partition, to); err != nil {
			t.Fatal(err)
		}
		if err := second.Assign(ctx, p); err != nil {
			t.Fatalf("round %d: Assign after the leader moved to %d: %v", round, to, err)
		}
		es, err := second.Lookup(ctx, p, []string{key})
		if err != nil || !es[0].Done {
			t.Fatalf("round %d: %q after a load from the new leader: %+v, %v; want done", round, key, es, err)
		}
		second.Release(p)
	}

	// A read-back, with the end offset known: the read alone must find
	// the new leader.
	if err := first.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	to := 1 - c.LeaderFor(changelog, p.Partition)
	if err := c.MoveTopicPartition(changelog, p.Partition, to); err != nil {
		t.Fatal(err)
	}
	ps := first.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := first.read(ctx, ps, 0, ps.next-1, time.Now().UnixNano(), nil); err != nil {
		t.Fatalf("a read after the leader moved to %d: %v", to, err)
	}
}

// TestPrepareWaitsUntilTheChangelogIsServed guards Prepare's wait: a topic
// just created is in the metadata before its leaders serve it, and Prepare
// must return only once every partition answers (here the first three
// ListOffsets requests are refused as a leader not ready yet refuses
// them), and report an error no retry can cure.
func TestPrepareWaitsUntilTheChangelogIsServed(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := testContext(t)
	refuse := func(code int16, times int) *atomic.Int64 {
		var n atomic.Int64
		c.ControlKey(int16(kmsg.ListOffsets), func(kr kmsg.Request) (kmsg.Response, error, bool) {
			if n.Load() == int64(times) {
				return nil, nil, false
			}
			c.KeepControl()
			n.Add(1)
			req := kr.(*kmsg.ListOffsetsRequest)
			resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
			for _, rt := range req.Topics {
				st := kmsg.NewListOffsetsResponseTopic()
				st.Topic = rt.Topic
				for _, rp := range rt.Partitions {
					sp := kmsg.NewListOffsetsResponseTopicPartition()
					sp.Partition = rp.Partition
					sp.ErrorCode = code
					st.Partitions = append(st.Partitions, sp)
				}
				resp.Topics = append(resp.Topics, st)
			}
			return resp, nil, true
		})
		return &n
	}
	n := refuse(kerr.NotLeaderForPartition.Code, 3)
	s := openStore(t, c.ListenAddrs(), Options{Group: "billing"})
	if err := s.Prepare(ctx, "orders"); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if got := n.Load(); got != 3 {
		t.Fatalf("Prepare returned after %d refused ListOffsets requests, want 3 (it must wait until they are answered)", got)
	}
	c.DropControl()

	refuse(kerr.TopicAuthorizationFailed.Code, 1000)
	other := openStore(t, c.ListenAddrs(), Options{Group: "billing"})
	if err := other.Prepare(ctx, "orders"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("Prepare with ListOffsets refused for good: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
}
