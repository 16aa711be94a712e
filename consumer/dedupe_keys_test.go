package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// produceKeys writes one record per key to partition 0 of topic, carrying
// the key in the Idempotency-Key header and as its value.
func produceKeys(t *testing.T, brokers []string, topic string, keys []string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, len(keys))
	for i, k := range keys {
		recs[i] = &kgo.Record{Value: []byte(k), Headers: []kgo.RecordHeader{{Key: dedupe.DefaultHeader, Value: []byte(k)}}}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// keyedPartition makes a one-partition topic holding one record per key and
// a config that reads it in one batch (cut by count) with a memory store.
func keyedPartition(t *testing.T, keys []string) ([]string, string, Config) {
	t.Helper()
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 1)
	produceKeys(t, brokers, topic, keys)
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Batch = batcher.Policy{MaxRecords: len(keys), MaxWait: 5 * time.Second}
	cfg.Dedupe = &Dedupe{Store: dedupe.NewMemory(dedupe.MemoryOptions{})}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	return brokers, topic, cfg
}

// seen records what a handler was handed: per key, the attempts of each
// delivery, and the number of calls.
type seen struct {
	mu    sync.Mutex
	calls int
	byKey map[string][]int
}

func (s *seen) add(b *Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	for i := range b.Records {
		s.one(b, i)
	}
}

// one records that the handler processed record i of b.
func (s *seen) one(b *Batch, i int) {
	if s.byKey == nil {
		s.byKey = map[string][]int{}
	}
	s.byKey[b.Key(i)] = append(s.byKey[b.Key(i)], b.Attempts(i))
}

// processed records the records of b the handler went through, up to the
// first whose key starts with bad, and returns that one's index (-1: none).
func (s *seen) processed(b *Batch, bad string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	for i := range b.Records {
		s.one(b, i)
		if strings.HasPrefix(b.Key(i), bad) {
			return i
		}
	}
	return -1
}

func (s *seen) get(k string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.byKey[k]...)
}

func waitCommitted(t *testing.T, brokers []string, group, topic string, n int64) {
	t.Helper()
	waitUntil(t, 30*time.Second, "the commit to the end", func() bool {
		return kafkatest.CommittedOffsets(t, brokers, group, topic)[0] == n
	})
}

// Guards the copy of a key landing in the batch of its original (a producer
// retry): it was handed out in the same delivery, counted twice by Begin (its
// first delivery reported attempts 2), and after FailedAt(1, err) handed out
// again although its key was done. Now the copy is held back and skipped.
func TestSameKeyTwiceInABatchIsHandedOutOnce(t *testing.T) {
	keys := []string{"A", "A", "B"}
	brokers, topic, cfg := keyedPartition(t, keys)
	var s seen
	var failed atomic.Bool
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		s.add(b)
		for i := range b.Records {
			if b.Key(i) == "B" && !failed.Swap(true) {
				return FailedAt(i, errors.New("B not yet"))
			}
		}
		return nil
	})
	waitCommitted(t, brokers, cfg.Group, topic, 3)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if got := s.get("A"); len(got) != 1 || got[0] != 1 {
		t.Errorf("A handed out with attempts %v, want once with attempts 1", got)
	}
	if got := s.get("B"); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Errorf("B handed out with attempts %v, want [1 2]", got)
	}
	if st := m.c.Stats(); st.Skipped != 1 || st.Records != 2 {
		t.Errorf("skipped %d, handled %d; want the copy skipped and 2 handled", st.Skipped, st.Records)
	}
}

// Guards markers without a store: after FailedAt the retry dropped the
// batch's marks, so a handler that checks HasMarker(i, "charged") charged
// the records after the index twice.
func TestMarkersFollowTheirRecordsAfterFailedAtWithoutAStore(t *testing.T) {
	const n = 10
	brokers, topic, cfg := onePartition(t, n, produce100)
	cfg.Batch = batcher.Policy{MaxRecords: n, MaxWait: 5 * time.Second}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	var mu sync.Mutex
	charged := map[int64]int{}
	var failed atomic.Bool
	m := startMember(t, cfg, func(ctx context.Context, b *Batch) error {
		mu.Lock()
		defer mu.Unlock()
		for i, r := range b.Records {
			if !b.HasMarker(i, "charged") {
				charged[r.Offset]++
				if err := b.Mark(ctx, i, "charged"); err != nil {
					return err
				}
			}
		}
		if !failed.Swap(true) {
			return FailedAt(4, errors.New("mail server down"))
		}
		return nil
	})
	waitCommitted(t, brokers, cfg.Group, topic, n)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for o := int64(0); o < n; o++ {
		if charged[o] != 1 {
			t.Errorf("offset %d charged %d times, want once", o, charged[o])
		}
	}
}

// Guards the retry path against done keys: one partition holding
// A B bad1 A C B bad2 C D, the bad records failed with FailedAt(i,
// Permanent(err)). A, B and C reached the handler twice, the second C after C
// had already succeeded alone. Each key must reach it once.
func TestRetryAfterFailedAtSkipsKeysDoneInTheBatch(t *testing.T) {
	keys := []string{"A", "B", "bad1", "A", "C", "B", "bad2", "C", "D"}
	brokers, topic, cfg := keyedPartition(t, keys)
	cfg.DeadLetter = &DeadLetter{}
	var s seen
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		if i := s.processed(b, "bad"); i >= 0 {
			return FailedAt(i, Permanent(errors.New("malformed")))
		}
		return nil
	})
	waitCommitted(t, brokers, cfg.Group, topic, int64(len(keys)))
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"A", "B", "C", "D", "bad1", "bad2"} {
		if got := s.get(k); len(got) != 1 || got[0] != 1 {
			t.Errorf("%s handed out with attempts %v, want once with attempts 1", k, got)
		}
	}
	if st := m.c.Stats(); st.DeadLettered != 2 || st.Skipped != 3 || st.Records != 4 {
		t.Errorf("dead-lettered %d, skipped %d, handled %d; want 2, 3, 4", st.DeadLettered, st.Skipped, st.Records)
	}
}

// Guards attempts per record: seven copies of one order behind a malformed
// record shared one counter, so valid copies were dead-lettered as "handed
// out 6 times without completing". And a record delivered after the failing
// index of a FailedAt was charged for that delivery, so with MaxAttempts 1
// it was dead-lettered without ever being handled.
func TestAttemptsCountOnlyDeliveriesThatReachedTheRecord(t *testing.T) {
	t.Run("copies behind a malformed record", func(t *testing.T) {
		keys := []string{"bad", "o", "o", "o", "o", "o", "o", "o"}
		brokers, topic, cfg := keyedPartition(t, keys)
		cfg.DeadLetter = &DeadLetter{}
		cfg.Retry.MaxAttempts = 5
		var s seen
		m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
			if i := s.processed(b, "bad"); i >= 0 {
				return FailedAt(i, Permanent(errors.New("malformed")))
			}
			return nil
		})
		waitCommitted(t, brokers, cfg.Group, topic, int64(len(keys)))
		if err := m.stop(); err != nil {
			t.Fatal(err)
		}
		if got := s.get("o"); len(got) != 1 || got[0] != 1 {
			t.Errorf("the order handed out with attempts %v, want once with attempts 1", got)
		}
		if st := m.c.Stats(); st.DeadLettered != 1 || st.Skipped != 6 {
			t.Errorf("dead-lettered %d, skipped %d; want only the malformed record, 6 copies skipped", st.DeadLettered, st.Skipped)
		}
	})
	t.Run("records after the index of a FailedAt", func(t *testing.T) {
		keys := []string{"A", "bad", "C"}
		brokers, topic, cfg := keyedPartition(t, keys)
		cfg.DeadLetter = &DeadLetter{}
		cfg.Retry.MaxAttempts = 1
		var s seen
		m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
			if i := s.processed(b, "bad"); i >= 0 {
				return FailedAt(i, errors.New("not yet"))
			}
			return nil
		})
		waitCommitted(t, brokers, cfg.Group, topic, int64(len(keys)))
		if err := m.stop(); err != nil {
			t.Fatal(err)
		}
		if got := s.get("C"); len(got) != 1 || got[0] != 1 {
			t.Errorf("C handled with attempts %v, want once with attempts 1", got)
		}
		if st := m.c.Stats(); st.DeadLettered != 1 || st.Records != 2 {
			t.Errorf("dead-lettered %d, handled %d; want only bad dead-lettered, A and C handled", st.DeadLettered, st.Records)
		}
	})
}

// Guards a partition the store refuses: on ErrFenced the worker exited and
// stayed registered, records were fetched and dropped and nothing committed,
// silently (a second store Assign on the same backend after 100 records left
// 100 of 600 handled for ever). The partition must be claimed again and go
// on, and the event be counted.
func TestRefusedPartitionIsClaimedAgainAndGoesOn(t *testing.T) {
	const n = 600
	brokers, topic, cfg := onePartition(t, n, produceKeyed)
	backend := dedupe.NewMemoryBackend()
	store := dedupe.NewMemory(dedupe.MemoryOptions{Backend: backend})
	other := dedupe.NewMemory(dedupe.MemoryOptions{Backend: backend})
	cfg.Dedupe = &Dedupe{Store: store}
	cfg.Batch = batcher.Policy{MaxRecords: 50, MaxWait: 10 * time.Millisecond}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	var mu sync.Mutex
	handled := map[string]bool{}
	var stole atomic.Bool
	m := startMember(t, cfg, func(ctx context.Context, b *Batch) error {
		mu.Lock()
		defer mu.Unlock()
		for i := range b.Records {
			handled[b.Key(i)] = true
		}
		if len(handled) >= 100 && !stole.Swap(true) {
			if err := other.Assign(ctx, offsets.Partition{Topic: topic, Partition: 0}); err != nil {
				return err
			}
		}
		return nil
	})
	waitCommitted(t, brokers, cfg.Group, topic, n)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != n {
		t.Errorf("%d of %d keys handled", len(handled), n)
	}
	if st := m.c.Stats(); st.StoreReassigns < 1 {
		t.Errorf("StoreReassigns = %d, want the refusal counted", st.StoreReassigns)
	}
}

// Guards Reject, and the orders a new user counts: 5% of order ids
// repeated (a producer retry shortly after the original), 1% malformed. The
// totals per customer must be exact, every malformed order dead-lettered,
// and the rejections must cost at most 10% more handler calls than a clean
// run (FailedAt(i, Permanent) made the rest of each batch come back one
// record per call: 21,019 calls for 50,000 orders instead of ~50 batches).
func TestRejectedOrdersCostNoExtraCallsAndTotalsAreExact(t *testing.T) {
	const orders, customers = 5000, 200
	run := func(t *testing.T, malformed bool) (calls int, totals map[int]int, st Stats) {
		var keys []string
		var values [][]byte
		want := map[int]int{}
		for i := range orders {
			id := fmt.Sprintf("order-%d", i)
			v := fmt.Sprintf("%d:%d", i%customers, i%7+1)
			if malformed && i%100 == 42 {
				v = "garbage"
			} else {
				want[i%customers] += i%7 + 1
			}
			keys, values = append(keys, id), append(values, []byte(v))
			if i%20 == 3 { // 5% repeated
				keys, values = append(keys, id), append(values, []byte(v))
			}
		}
		brokers := kafkatest.Brokers(t)
		topic := kafkatest.NewTopic(t, 1)
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
		if err != nil {
			t.Fatal(err)
		}
		recs := make([]*kgo.Record, len(keys))
		for i := range keys {
			recs[i] = &kgo.Record{Value: values[i], Headers: []kgo.RecordHeader{{Key: dedupe.DefaultHeader, Value: []byte(keys[i])}}}
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		cl.Close()
		cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
		cfg.Batch = batcher.Policy{MaxRecords: 100, MaxWait: 20 * time.Millisecond}
		cfg.Dedupe = &Dedupe{Store: dedupe.NewMemory(dedupe.MemoryOptions{})}
		cfg.DeadLetter = &DeadLetter{}
		cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
		var mu sync.Mutex
		totals = map[int]int{}
		m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
			mu.Lock()
			defer mu.Unlock()
			calls++
			for i, r := range b.Records {
				var c, amount int
				if _, err := fmt.Sscanf(string(r.Value), "%d:%d", &c, &amount); err != nil {
					if err := b.Reject(i, fmt.Errorf("malformed order %q", r.Value)); err != nil {
						return err
					}
					continue
				}
				totals[c] += amount
			}
			return nil
		})
		waitCommitted(t, brokers, cfg.Group, topic, int64(len(keys)))
		if err := m.stop(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		for c := range customers {
			if totals[c] != want[c] {
				t.Errorf("customer %d: total %d, want %d", c, totals[c], want[c])
			}
		}
		return calls, totals, m.c.Stats()
	}
	clean, _, _ := run(t, false)
	dirty, _, st := run(t, true)
	if st.DeadLettered != orders/100 {
		t.Errorf("dead-lettered %d, want the %d malformed orders", st.DeadLettered, orders/100)
	}
	if st.Skipped != orders/20 {
		t.Errorf("skipped %d, want the %d repeated ids", st.Skipped, orders/20)
	}
	if float64(dirty) > 1.1*float64(clean) {
		t.Errorf("%d handler calls with 1%% malformed orders against %d for a clean run: more than 10%% extra", dirty, clean)
	}
	t.Logf("handler calls: clean %d, with 1%% malformed %d", clean, dirty)
}

// Guards the key namespaces: an Idempotency-Key header equal to another
// record's fallback key (topic/partition/offset) marked that record done,
// so it was skipped without ever being handled.
func TestHeaderKeyNeverNamesAnotherRecordsFallbackKey(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	forged := []byte(topic + "/0/1") // record 1's key as the fallback spelled it
	err = cl.ProduceSync(context.Background(),
		&kgo.Record{Value: []byte("a"), Headers: []kgo.RecordHeader{{Key: dedupe.DefaultHeader, Value: forged}}},
		&kgo.Record{Value: []byte("b")}, // no header: keyed by its offset
	).FirstErr()
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Batch = batcher.Policy{MaxRecords: 1, MaxWait: time.Second}
	cfg.Dedupe = &Dedupe{Store: dedupe.NewMemory(dedupe.MemoryOptions{})}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	var handled atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		handled.Add(int64(len(b.Records)))
		return nil
	})
	waitCommitted(t, brokers, cfg.Group, topic, 2)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if got := handled.Load(); got != 2 {
		t.Fatalf("handled %d records, want both: a header key made another record done", got)
	}
}

// Guards the dead-letter copy of a record carrying forged kbatch-* headers:
// they came before kbatch's own, so a reader taking the first header of a
// name read the forged source offset. They are left out of the copy; the
// record's other headers are kept.
func TestForgedKbatchHeadersAreLeftOutOfTheDeadLetterCopy(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	err = cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte("x"), Headers: []kgo.RecordHeader{
		{Key: HeaderSourceOffset, Value: []byte("999")},
		{Key: "trace", Value: []byte("abc")},
		{Key: HeaderError, Value: []byte("forged")},
	}}).FirstErr()
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.DeadLetter = &DeadLetter{}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		return FailedAt(0, Permanent(errors.New("bad")))
	})
	waitCommitted(t, brokers, cfg.Group, topic, 1)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	dlq := readAll(t, brokers, topic+".dlq", 1, 10*time.Second)
	if len(dlq) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(dlq))
	}
	if got := header(dlq[0], HeaderSourceOffset); got != "0" {
		t.Errorf("first %s header = %q, want the real offset 0", HeaderSourceOffset, got)
	}
	if got := header(dlq[0], HeaderError); got != "permanent: bad" {
		t.Errorf("first %s header = %q, want kbatch's", HeaderError, got)
	}
	if got := header(dlq[0], "trace"); got != "abc" {
		t.Errorf("the record's own header trace = %q, want it kept", got)
	}
}
