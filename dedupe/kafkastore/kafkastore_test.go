package kafkastore

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/dedupe/dedupetest"
	"github.com/kbatch/kbatch/internal/kafkatest"
)

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openStore opens a store closed at the end of the test, and deletes the
// changelog topic of group and input then.
func openStore(t testing.TB, brokers []string, opts Options) *Store {
	t.Helper()
	opts.Brokers = brokers
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// deleteAtEnd deletes topic when the test ends (after the stores closed:
// cleanups run last-registered first, so call it before opening them).
func deleteAtEnd(t testing.TB, brokers []string, topic string) {
	adm := kafkatest.Admin(t, brokers)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, topic)
	})
}

func newHarness(t *testing.T) *dedupetest.Harness {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 4)
	group := kafkatest.NewGroup(t)
	changelog := group + "." + topic + ".kbatch-dedupe"
	deleteAtEnd(t, brokers, changelog)
	clock := dedupetest.NewClock(time.Time{})
	return &dedupetest.Harness{
		Open: func(t *testing.T) dedupe.Store {
			return openStore(t, brokers, Options{Group: group, Now: clock.Now})
		},
		Topic:      topic,
		Partitions: 4,
		Retention:  DefaultRetention,
		Advance:    clock.Advance,
		InjectMalformed: func(t *testing.T, p dedupe.Partition, key string) {
			produceRaw(t, brokers, changelog, p.Partition,
				&kgo.Record{Key: recordKey(key), Value: []byte("not an entry")},
				&kgo.Record{Key: recordKey(key), Value: appendEntry(nil, 0, entry{attempts: 1})[:5]}, // truncated
				&kgo.Record{Key: []byte(claimPrefix + "garbage"), Value: []byte{9, 9}},
				&kgo.Record{Key: []byte("\x00unknown reserved key"), Value: []byte{1}},
				&kgo.Record{Key: recordKey(key)}, // a tombstone without an epoch
			)
		},
		Malformed: func(s dedupe.Store) int64 { return s.(*Store).Stats().Malformed },
		InjectFuture: func(t *testing.T, p dedupe.Partition, key string) {
			end := kafkatest.EndOffsets(t, brokers, changelog)[p.Partition]
			produceRaw(t, brokers, changelog, p.Partition,
				&kgo.Record{Key: recordKey(key), Value: futureEntry(end-1, clock.Now().Add(time.Hour).UnixNano())})
		},
		OpenBounded: func(t *testing.T, maxKeys int) dedupe.Store {
			return openStore(t, brokers, Options{Group: group, Now: clock.Now, MaxKeys: maxKeys})
		},
		Forgotten: func(s dedupe.Store) int64 { return s.(*Store).Stats().Evicted },
	}
}

// futureEntry is a golden entry as a newer version writes it: an unknown
// flag bit (0x80) next to done's, attempts 2, the marker "m", then two
// extension fields (tags 7 and 300) this version does not know.
func futureEntry(epoch, expires int64) []byte {
	b := []byte{valueVersion, kindEntry}
	b = binary.AppendUvarint(b, uint64(epoch))
	b = append(b, 0x80)                 // flags: not done, one unknown bit
	b = binary.AppendUvarint(b, 2)      // attempts
	b = binary.AppendVarint(b, expires) // expires
	b = append(b, 1, 1, 'm')            // one marker
	b = append(b, 7, 3, 'x', 'y', 'z')  // extension: tag 7, 3 bytes
	b = binary.AppendUvarint(b, 300)    // extension: tag 300,
	b = append(b, 0)                    // empty
	return b
}

// produceRaw writes records to partition of topic as they are.
func produceRaw(t testing.TB, brokers []string, topic string, partition int32, recs ...*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, r := range recs {
		r.Partition = partition
	}
	if err := cl.ProduceSync(testContext(t), recs...).FirstErr(); err != nil {
		t.Fatalf("producing to %s/%d: %v", topic, partition, err)
	}
}

// readRaw returns every record of partition of topic below its end offset.
func readRaw(t testing.TB, brokers []string, topic string, partition int32) []*kgo.Record {
	t.Helper()
	end := kafkatest.EndOffsets(t, brokers, topic)[partition]
	if end == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := testContext(t)
	var out []*kgo.Record
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("reading %s/%d: %v", topic, partition, err)
		}
		last := int64(-1)
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			last = r.Offset
		})
		if last >= end-1 {
			return out
		}
	}
}

func TestConformance(t *testing.T) {
	dedupetest.Run(t, newHarness, dedupetest.Features{FencedWritesFail: true, DoneKeepsOnlyExpiry: true})
}

// TestChangelogIsCompactedAndCoPartitioned guards the changelog's shape: a
// topic that is not compacted loses entries to time retention; one with
// another partition count, or records written to the wrong partition, would
// not move with the input partition on a rebalance.
func TestChangelogIsCompactedAndCoPartitioned(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	input := kafkatest.NewTopic(t, 3)
	group := kafkatest.NewGroup(t)
	changelog := group + "." + input + ".kbatch-dedupe"
	deleteAtEnd(t, brokers, changelog)
	s := openStore(t, brokers, Options{Group: group})
	ctx := testContext(t)
	p := dedupe.Partition{Topic: input, Partition: 2}
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(ctx, p, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}

	adm := kafkatest.Admin(t, brokers)
	details, err := adm.ListTopics(ctx, changelog)
	if err != nil || details.Error() != nil {
		t.Fatalf("listing %s: %v %v", changelog, err, details.Error())
	}
	if n := len(details[changelog].Partitions); n != 3 {
		t.Errorf("changelog has %d partitions, want 3 like the input", n)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, changelog)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(changelog, nil)
	if err != nil {
		t.Fatal(err)
	}
	policy := ""
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" {
			policy = c.MaybeValue()
		}
	}
	if policy != "compact" {
		t.Errorf("changelog cleanup.policy %q, want compact", policy)
	}
	ends := kafkatest.EndOffsets(t, brokers, changelog)
	if ends[0] != 0 || ends[1] != 0 || ends[2] != 2 {
		t.Errorf("changelog end offsets %v, want only partition 2 written (a claim and one record of the keys begun)", ends)
	}
}

// TestBatchCostsOneRecordPerCall guards the store's cost per batch: Begin
// and Done wrote one changelog record per key (2,000 records for a batch of
// 1,000 first deliveries), which made the Kafka store a tenth of kbatch's
// speed. A first delivery's keys go in one record, a Done's in another.
func TestBatchCostsOneRecordPerCall(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	input := kafkatest.NewTopic(t, 1)
	group := kafkatest.NewGroup(t)
	changelog := group + "." + input + ".kbatch-dedupe"
	deleteAtEnd(t, brokers, changelog)
	ctx := testContext(t)
	p := dedupe.Partition{Topic: input, Partition: 0}
	s := openStore(t, brokers, Options{Group: group})
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "order-" + strconv.Itoa(i)
	}
	before := kafkatest.EndOffsets(t, brokers, changelog)[0]
	for range 3 {
		if _, err := s.Begin(ctx, p, keys); err != nil {
			t.Fatal(err)
		}
		if err := s.Done(ctx, p, keys); err != nil {
			t.Fatal(err)
		}
		keys = append(keys[:0:0], keys...)
		for i := range keys {
			keys[i] += "x"
		}
	}
	if n := kafkatest.EndOffsets(t, brokers, changelog)[0] - before; n > 3*2+3 {
		t.Errorf("3 batches of 1000 first deliveries wrote %d changelog records, want about 2 per batch", n)
	}
	s.Release(p) // the partition moves: the last Done lands before the next owner's claim
	s2 := openStore(t, brokers, Options{Group: group})
	if err := s2.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	es, err := s2.Lookup(ctx, p, []string{"order-0", "order-999xx", "order-5xxx"})
	if err != nil {
		t.Fatal(err)
	}
	if !es[0].Done || !es[1].Done || es[2].Done || es[2].Attempts != 0 {
		t.Errorf("after a reopen: %+v, want the first two done and the third unknown", es)
	}
}

// TestAssignRefusesChangelogWithOtherPartitionCount guards against loading
// state from a changelog that is not co-partitioned with the input (it
// would hand one partition's keys to another), and against an error that
// does not say what to do.
func TestAssignRefusesChangelogWithOtherPartitionCount(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	input := kafkatest.NewTopic(t, 3)
	group := kafkatest.NewGroup(t)
	changelog := group + "." + input + ".kbatch-dedupe"
	deleteAtEnd(t, brokers, changelog)
	adm := kafkatest.Admin(t, brokers)
	if _, err := adm.CreateTopic(testContext(t), 2, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, changelog); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, brokers, Options{Group: group})
	err := s.Assign(testContext(t), dedupe.Partition{Topic: input, Partition: 0})
	var pce *PartitionCountError
	if !errors.As(err, &pce) {
		t.Fatalf("Assign: %v, want a *PartitionCountError", err)
	}
	if pce.ChangelogPartitions != 2 || pce.InputPartitions != 3 || pce.Changelog != changelog || pce.Input != input {
		t.Errorf("error %+v, want changelog %s with 2 partitions, input %s with 3", pce, changelog, input)
	}
	if msg := err.Error(); !strings.Contains(msg, changelog) || !strings.Contains(msg, "3") || !strings.Contains(msg, "2") {
		t.Errorf("error %q does not name the topics and counts", msg)
	}
}

// TestPrepareCreatesTheChangelogAndRefusesWhatAssignRefuses guards
// Prepare: it creates the changelog Assign would (compacted, co-partitioned)
// before any Assign, and reports what Assign would report.
func TestPrepareCreatesTheChangelogAndRefusesWhatAssignRefuses(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	ctx := testContext(t)
	input := kafkatest.NewTopic(t, 3)
	group := kafkatest.NewGroup(t)
	changelog := group + "." + input + ".kbatch-dedupe"
	deleteAtEnd(t, brokers, changelog)
	s := openStore(t, brokers, Options{Group: group})
	if err := s.Prepare(ctx, input); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	adm := kafkatest.Admin(t, brokers)
	details, err := adm.ListTopics(ctx, changelog)
	if err != nil || details.Error() != nil {
		t.Fatalf("listing %s after Prepare: %v %v", changelog, err, details.Error())
	}
	if n := len(details[changelog].Partitions); n != 3 {
		t.Errorf("changelog has %d partitions, want 3 like the input", n)
	}
	p := dedupe.Partition{Topic: input, Partition: 1}
	if err := s.Assign(ctx, p); err != nil {
		t.Fatalf("Assign after Prepare: %v", err)
	}
	if _, err := s.Begin(ctx, p, []string{"a"}); err != nil {
		t.Fatal(err)
	}

	missing := kafkatest.Name(t, "missing")
	if err := s.Prepare(ctx, missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Prepare of a missing input topic: %v, want an error naming it", err)
	}
	other := kafkatest.NewTopic(t, 3)
	otherLog := group + "." + other + ".kbatch-dedupe"
	deleteAtEnd(t, brokers, otherLog)
	if _, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, otherLog); err != nil {
		t.Fatal(err)
	}
	var pce *PartitionCountError
	if err := s.Prepare(ctx, other); !errors.As(err, &pce) {
		t.Errorf("Prepare with a changelog of 2 partitions for 3: %v, want a *PartitionCountError", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Prepare(ctx, input); !errors.Is(err, dedupe.ErrClosed) {
		t.Errorf("Prepare after Close: %v, want ErrClosed", err)
	}
}

// TestAssignRefusesMissingInputTopic guards against creating a changelog
// (with a guessed partition count) for an input topic that does not exist.
func TestAssignRefusesMissingInputTopic(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	s := openStore(t, brokers, Options{Group: kafkatest.NewGroup(t)})
	missing := kafkatest.Name(t, "missing")
	err := s.Assign(testContext(t), dedupe.Partition{Topic: missing, Partition: 0})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Assign on a missing input topic: %v, want an error naming it", err)
	}
}

// TestNewRefusesBadOptions guards invariant 8's last clause for this
// surface: invalid options are refused with an error naming the field.
func TestNewRefusesBadOptions(t *testing.T) {
	cases := []struct {
		name  string
		opts  Options
		field string
	}{
		{"no brokers", Options{Group: "g"}, "Brokers"},
		{"no group and no topic name", Options{Brokers: []string{"b"}}, "Group"},
		{"negative retention", Options{Brokers: []string{"b"}, Group: "g", Retention: -time.Second}, "Retention"},
		{"replication factor below -1", Options{Brokers: []string{"b"}, Group: "g", ReplicationFactor: -2}, "ReplicationFactor"},
		{"negative producers", Options{Brokers: []string{"b"}, Group: "g", Producers: -1}, "Producers"},
		{"a linger above the client's bound", Options{Brokers: []string{"b"}, Group: "g", DoneLinger: 2 * time.Minute}, "DoneLinger"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(c.opts)
			var oe *OptionsError
			if err == nil {
				_ = s.Close()
			}
			if !errors.As(err, &oe) || oe.Field != c.field || !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("New: %v, want an OptionsError for field %s", err, c.field)
			}
		})
	}
}

// TestReservedLookingKeysAreOrdinaryKeys guards the key escaping: an
// idempotency key that is empty or looks like the store's owner claim key
// must be stored as an ordinary entry, not read back as a claim (which
// would move the fencing epoch) or as malformed.
func TestReservedLookingKeysAreOrdinaryKeys(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	input := kafkatest.NewTopic(t, 1)
	group := kafkatest.NewGroup(t)
	deleteAtEnd(t, brokers, group+"."+input+".kbatch-dedupe")
	ctx := testContext(t)
	p := dedupe.Partition{Topic: input, Partition: 0}
	keys := []string{"", "\x00", "\x00\x00", claimPrefix + "0123456789abcdef", "plain"}

	s1 := openStore(t, brokers, Options{Group: group})
	if err := s1.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Begin(ctx, p, keys); err != nil {
		t.Fatal(err)
	}
	_ = s1.Close()

	s2 := openStore(t, brokers, Options{Group: group})
	if err := s2.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	es, err := s2.Lookup(ctx, p, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if e.Attempts != 1 {
			t.Errorf("key %q: attempts %d after a reopen, want 1", keys[i], e.Attempts)
		}
	}
	if st := s2.Stats(); st.Malformed != 0 {
		t.Errorf("%d records reported malformed, want 0", st.Malformed)
	}
	if _, err := s2.Begin(ctx, p, []string{"plain"}); err != nil {
		t.Errorf("Begin after the reopen: %v (a key taken for a claim fenced the store)", err)
	}
}

// TestStateSurvivesCompaction guards the fencing and the load against
// compaction, which keeps only the last record of each key: owner claims
// must not supersede each other (a zombie's write after a compacted-away
// claim would become visible), the zombie's record, being the last of its
// key, must be superseded by a rewrite from the next owner (or compaction
// would erase the key's real state), and the load must stop although
// records before the end are gone. kfake compacts only when asked, so this
// runs on a cluster of its own whatever KAFKA_BROKERS says.
func TestStateSurvivesCompaction(t *testing.T) {
	cluster, err := kafkatest.NewEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	ctx := testContext(t)
	adm := kafkatest.Admin(t, brokers)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "input"); err != nil {
		t.Fatal(err)
	}
	p := dedupe.Partition{Topic: "input", Partition: 0}
	open := func() *Store {
		s := openStore(t, brokers, Options{Group: "g"})
		if err := s.Assign(ctx, p); err != nil {
			t.Fatal(err)
		}
		return s
	}

	s1 := open()
	for range 3 {
		if _, err := s1.Begin(ctx, p, []string{"k", "j"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s1.Mark(ctx, p, "k", "one"); err != nil {
		t.Fatal(err)
	}
	s2 := open() // s1 is a zombie from here
	if _, err := s2.Begin(ctx, p, []string{"k"}); err != nil {
		t.Fatal(err)
	}
	if err := s1.Mark(ctx, p, "k", "zombie"); !errors.Is(err, dedupe.ErrFenced) {
		t.Fatalf("zombie Mark: %v, want ErrFenced", err)
	}
	_ = s2.Close() // closed before it could see and rewrite the zombie's record
	s3 := open()   // loads, ignores the zombie's record and rewrites k
	before, err := s3.Lookup(ctx, p, []string{"k", "j"})
	if err != nil {
		t.Fatal(err)
	}
	if st := s3.Stats(); st.Fenced != 1 {
		t.Errorf("s3 ignored %d zombie records, want 1", st.Fenced)
	}
	_ = s3.Close()
	_ = s1.Close()

	n := len(readRaw(t, brokers, "g.input.kbatch-dedupe", 0))
	cluster.Compact()
	if m := len(readRaw(t, brokers, "g.input.kbatch-dedupe", 0)); m >= n {
		t.Fatalf("compaction kept %d of %d records; the test needs it to remove some", m, n)
	}

	s4 := open()
	after, err := s4.Lookup(ctx, p, []string{"k", "j"})
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"k", "j"} {
		b, a := before[i], after[i]
		if a.Attempts != b.Attempts || a.Done != b.Done || strings.Join(a.Markers, ",") != strings.Join(b.Markers, ",") {
			t.Errorf("key %s: %+v before compaction, %+v after", key, b, a)
		}
	}
	if after[0].Attempts != 4 || strings.Join(after[0].Markers, ",") != "one" {
		t.Errorf("k: attempts %d markers %q, want 4 and [one] (the zombie's marker must not show)", after[0].Attempts, after[0].Markers)
	}
	if _, err := s4.Begin(ctx, p, []string{"k"}); err != nil {
		t.Errorf("Begin after compaction: %v", err)
	}
}

// TestOldClaimsAndExpiredEntriesAreDeleted guards the changelog's growth:
// every Assign writes a claim under a key of its own and every key stays
// until deleted, so without tombstones for expired entries and for claims
// older than twice the retention the topic would grow for ever.
func TestOldClaimsAndExpiredEntriesAreDeleted(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	input := kafkatest.NewTopic(t, 1)
	group := kafkatest.NewGroup(t)
	changelog := group + "." + input + ".kbatch-dedupe"
	deleteAtEnd(t, brokers, changelog)
	ctx := testContext(t)
	clock := dedupetest.NewClock(time.Time{})
	p := dedupe.Partition{Topic: input, Partition: 0}
	s := openStore(t, brokers, Options{Group: group, Now: clock.Now, Retention: time.Hour})
	for range 3 {
		if err := s.Assign(ctx, p); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Begin(ctx, p, []string{"old"}); err != nil {
			t.Fatal(err)
		}
		s.Release(p)
	}
	clock.Advance(2*time.Hour + time.Minute)
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(ctx, p, []string{"new"}); err != nil {
		t.Fatal(err)
	}

	claims, tombstoned := 0, map[string]int{}
	for _, r := range readRaw(t, brokers, changelog, 0) {
		key, isClaim, err := parseKey(r.Key)
		if err != nil {
			t.Fatalf("offset %d: %v", r.Offset, err)
		}
		switch {
		case isClaim && r.Value != nil:
			claims++
		case r.Value == nil && isClaim:
			tombstoned["claim"]++
		case r.Value == nil:
			tombstoned[key]++
		}
	}
	if claims != 4 || tombstoned["claim"] != 3 || tombstoned["old"] != 1 || tombstoned["new"] != 0 {
		t.Errorf("%d claims, tombstones %v; want 4 claims, 3 claim tombstones, 1 for the expired key old", claims, tombstoned)
	}
	es, err := s.Lookup(ctx, p, []string{"old", "new"})
	if err != nil || es[0].Attempts != 0 || es[1].Attempts != 1 {
		t.Errorf("Lookup: %+v %v, want old forgotten and new counted once", es, err)
	}
}

// BenchmarkKafkaBeginDone measures the dedupe gate's cost per batch of 500
// fresh keys on the Kafka store: one Begin and one Done, each one produce
// round to the changelog (acks=all), against the test broker (kfake unless
// KAFKA_BROKERS is set).
func BenchmarkKafkaBeginDone(b *testing.B) {
	benchKafkaBatches(b, batchKeys)
}

// BenchmarkKafkaFallbackBatch is BenchmarkKafkaBeginDone with the gate's
// Lookup and the fallback keys of records without an idempotency key, in
// offset order, as the bench's records have.
func BenchmarkKafkaFallbackBatch(b *testing.B) {
	benchKafkaBatches(b, batchFallbackKeys)
}

// BenchmarkKafkaOffsetsBatch is BenchmarkKafkaFallbackBatch through the
// OffsetStore calls the consumer makes for such records: keys given as ""
// and their offsets, no key string built.
func BenchmarkKafkaOffsetsBatch(b *testing.B) {
	benchKafkaBatches(b, batchOffsets)
}

// How benchKafkaBatches names a batch's keys.
const (
	batchKeys         = iota // keys of their own, Begin and Done
	batchFallbackKeys        // fallback keys as strings, Lookup, Begin and Done
	batchOffsets             // fallback keys by offset, through the OffsetStore calls
)

func benchKafkaBatches(b *testing.B, kind int) {
	const batch = 500
	brokers := kafkatest.Brokers(b)
	input := kafkatest.NewTopic(b, 1)
	group := kafkatest.NewGroup(b)
	deleteAtEnd(b, brokers, group+"."+input+".kbatch-dedupe")
	s := openStore(b, brokers, Options{Group: group})
	ctx := testContext(b)
	p := dedupe.Partition{Topic: input, Partition: 0}
	if err := s.Assign(ctx, p); err != nil {
		b.Fatal(err)
	}
	keys, offs, out := make([]string, batch), make([]int64, batch), make([]dedupe.Entry, batch)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		for j := range keys {
			o := int64(n*batch + j)
			switch kind {
			case batchKeys:
				keys[j] = "key-" + strconv.FormatInt(o, 10)
			case batchFallbackKeys:
				keys[j] = dedupe.OffsetKey(p.Topic, p.Partition, o)
			case batchOffsets:
				offs[j] = o // keys stay ""
			}
		}
		n++
		var err error
		switch kind {
		case batchKeys:
			if _, err = s.Begin(ctx, p, keys); err == nil {
				err = s.Done(ctx, p, keys)
			}
		case batchFallbackKeys:
			if _, err = s.Lookup(ctx, p, keys); err == nil {
				if _, err = s.Begin(ctx, p, keys); err == nil {
					err = s.Done(ctx, p, keys)
				}
			}
		case batchOffsets:
			if err = s.LookupOffsets(ctx, p, keys, offs, out); err == nil {
				if err = s.BeginOffsets(ctx, p, keys, offs, out); err == nil {
					err = s.DoneOffsets(ctx, p, keys, offs)
				}
			}
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*batch), "ns/key")
}

// TestLateClaimFencesNobody guards a claim still in flight when its member
// lost the partition: it landed after the new owner's claim and, being the
// later one, fenced the new owner (its next write failed with ErrFenced and
// the partition stopped). A claim counts only if its writer had seen the
// latest claim: this one's base (the end offset read before it was sent)
// is below the new owner's claim.
func TestLateClaimFencesNobody(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 2)
	group := kafkatest.NewGroup(t)
	changelog := group + "." + topic + ".kbatch-dedupe"
	deleteAtEnd(t, brokers, changelog)
	ctx := testContext(t)
	p := dedupe.Partition{Topic: topic, Partition: 0}
	old := openStore(t, brokers, Options{Group: group})
	if err := old.Assign(ctx, dedupe.Partition{Topic: topic, Partition: 1}); err != nil {
		t.Fatal(err) // creates the changelog
	}
	// The old owner reads the end offset and sends its claim for p...
	base := kafkatest.EndOffsets(t, brokers, changelog)[0]
	late := &kgo.Record{Key: []byte("\x00kbatch-owner/late"), Value: appendClaim(nil, time.Now().UnixNano()),
		Headers: []kgo.RecordHeader{{Key: "kbatch-base", Value: []byte(strconv.FormatInt(base, 10))}}}

	// ...which is still in flight while p moves to the new owner.
	s := openStore(t, brokers, Options{Group: group})
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(ctx, p, []string{"k"}); err != nil {
		t.Fatal(err)
	}
	produceRaw(t, brokers, changelog, 0, late) // it lands now
	if _, err := s.Begin(ctx, p, []string{"k"}); err != nil {
		t.Fatalf("Begin after a late claim landed: %v, want the new owner kept", err)
	}
	if err := s.Done(ctx, p, []string{"k"}); err != nil {
		t.Fatalf("Done after a late claim landed: %v", err)
	}
	s.Release(p) // the partition moves: the Done lands before the next owner's claim
	s2 := openStore(t, brokers, Options{Group: group})
	if err := s2.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	es, err := s2.Lookup(ctx, p, []string{"k"})
	if err != nil || !es[0].Done {
		t.Fatalf("k after the next Assign: %+v, %v; want done", es, err)
	}
}

// TestFallbackKeysDoneAsRuns guards the runs record of a partition's
// fallback keys done: a Done of keys in any order, repeated, mixed with
// other keys and with keys retried (a record of their own, which goes)
// leaves exactly those keys done, for this store and for the next owner
// that reads the changelog; a Begin of them hands nothing out; and they
// are forgotten once their retention passes.
func TestFallbackKeysDoneAsRuns(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	input := kafkatest.NewTopic(t, 1)
	group := kafkatest.NewGroup(t)
	changelog := group + "." + input + ".kbatch-dedupe"
	deleteAtEnd(t, brokers, changelog)
	ctx := testContext(t)
	clock := dedupetest.NewClock(time.Time{})
	p := dedupe.Partition{Topic: input, Partition: 0}
	key := func(o int64) string { return dedupe.OffsetKey(p.Topic, p.Partition, o) }
	opts := Options{Group: group, Now: clock.Now, Retention: time.Hour}
	s := openStore(t, brokers, opts)
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	var begun, done []string
	for o := range int64(50) {
		begun = append(begun, key(o))
	}
	if _, err := s.Begin(ctx, p, begun); err != nil {
		t.Fatal(err)
	}
	if es, err := s.Begin(ctx, p, []string{key(7), key(8)}); err != nil || es[0].Attempts != 2 {
		t.Fatalf("second Begin: %+v %v, want 2 attempts", es, err)
	}
	// Shuffled, repeated, with a gap (20-29 not done), an other key, and
	// keys never begun (60-69).
	for o := int64(49); o >= 30; o-- {
		done = append(done, key(o))
	}
	done = append(done, "order-1", key(8))
	for o := range int64(20) {
		done = append(done, key(o))
	}
	for o := int64(60); o < 70; o++ {
		done = append(done, key(o), key(o))
	}
	if err := s.Done(ctx, p, done); err != nil {
		t.Fatal(err)
	}
	isDone := func(o int64) bool { return o < 20 || (o >= 30 && o < 50) || (o >= 60 && o < 70) }
	check := func(s *Store, what string, want func(o int64) bool) {
		t.Helper()
		var keys []string
		for o := range int64(80) {
			keys = append(keys, key(o))
		}
		es, err := s.Lookup(ctx, p, append(keys, "order-1"))
		if err != nil {
			t.Fatal(err)
		}
		for o := range int64(80) {
			if es[o].Done != want(o) {
				t.Errorf("%s: offset %d done %v, want %v (%+v)", what, o, es[o].Done, want(o), es[o])
			}
		}
		if es[80].Done != want(0) {
			t.Errorf("%s: order-1 done %v, want %v", what, es[80].Done, want(0))
		}
	}
	check(s, "after Done", isDone)
	if es, err := s.Begin(ctx, p, []string{key(7), key(35), key(25)}); err != nil || !es[0].Done || !es[1].Done || es[2].Done || es[2].Attempts != 2 {
		t.Fatalf("Begin after Done: %+v %v, want two done and the third at 2 attempts", es, err)
	}

	next := openStore(t, brokers, opts)
	if err := next.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	check(next, "read back", isDone)
	tombstoned := map[string]bool{}
	for _, r := range readRaw(t, brokers, changelog, 0) {
		if k, _, err := parseKey(r.Key); err == nil && r.Value == nil {
			tombstoned[k] = true
		}
	}
	if !tombstoned[key(7)] || !tombstoned[key(8)] {
		t.Errorf("records of the retried keys done not deleted: tombstones %v", tombstoned)
	}
	if st := next.Stats(); st.Malformed != 0 {
		t.Errorf("%d records read as malformed", st.Malformed)
	}

	clock.Advance(time.Hour + time.Minute)
	check(next, "expired", func(int64) bool { return false })
	last := openStore(t, brokers, opts)
	if err := last.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	check(last, "expired, read back", func(int64) bool { return false })
}
