package consumer

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// readAll reads every record of topic from the start until n arrived or the
// timeout passed.
func readAll(t *testing.T, brokers []string, topic string, n int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// Guards invariant 8: a record whose handler always fails reaches the
// dead-letter topic after MaxAttempts, as it was plus headers naming its
// source, attempts and last error; its neighbours are not dead-lettered with
// it, and the partition goes on and commits past it.
func TestAlwaysFailingRecordIsDeadLetteredAndThePartitionGoesOn(t *testing.T) {
	const n, poison = 1000, 437
	brokers, topic, cfg := onePartition(t, n, produce100)
	group := cfg.Group
	cfg.Batch = batcher.Policy{MaxRecords: 100, MaxWait: 10 * time.Millisecond}
	cfg.DeadLetter = &DeadLetter{}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 3}
	cfg.Commit = offsets.Policy{Interval: 20 * time.Millisecond}
	var handled sync.Map
	var poisonCalls atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		for _, r := range b.Records {
			if r.Offset == poison {
				poisonCalls.Add(1)
				return errors.New("cannot parse record 437")
			}
		}
		for _, r := range b.Records {
			handled.Store(r.Offset, true)
		}
		return nil
	})
	waitUntil(t, 30*time.Second, "the commit past the poison record", func() bool {
		return kafkatest.CommittedOffsets(t, brokers, group, topic)[0] == n
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	for o := int64(0); o < n; o++ {
		if _, ok := handled.Load(o); ok == (o == poison) {
			t.Fatalf("offset %d handled = %v", o, ok)
		}
	}
	if got := poisonCalls.Load(); got != 3 {
		t.Fatalf("the poison record was handed out %d times, want MaxAttempts = 3", got)
	}
	dlq := readAll(t, brokers, topic+".dlq", 1, 10*time.Second)
	if len(dlq) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(dlq))
	}
	r := dlq[0]
	if string(r.Value) != string(value100(poison)) || string(r.Key) != "k"+strconv.Itoa(poison) {
		t.Fatalf("dead-lettered record changed: key %q value %q", r.Key, r.Value)
	}
	for k, want := range map[string]string{
		HeaderSourceTopic: topic, HeaderSourcePartition: "0", HeaderSourceOffset: strconv.Itoa(poison),
		HeaderAttempts: "3", HeaderError: "cannot parse record 437",
	} {
		if got := header(r, k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, header(r, HeaderTime)); err != nil {
		t.Errorf("header %s: %v", HeaderTime, err)
	}
	if s := m.c.Stats(); s.DeadLettered != 1 {
		t.Fatalf("stats dead-lettered = %d", s.DeadLettered)
	}
}

// Guards the partial-failure contract: FailedAt(i) completes exactly the
// records before i, so the commit stops at the failing record and never
// passes it while it keeps failing (invariant 2).
func TestPartialFailureCommitsExactlyTheRecordsBeforeTheIndex(t *testing.T) {
	const n, stuck = 500, 230
	brokers, topic, cfg := onePartition(t, n, produce100)
	group := cfg.Group
	cfg.Batch = batcher.Policy{MaxRecords: 100, MaxWait: 10 * time.Millisecond}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	var retriesAtStuck atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		for i, r := range b.Records {
			if r.Offset == stuck {
				if i == 0 {
					retriesAtStuck.Add(1)
				}
				return FailedAt(i, errors.New("downstream refused"))
			}
		}
		return nil
	})
	waitUntil(t, 30*time.Second, "retries resuming at the failing record", func() bool { return retriesAtStuck.Load() >= 5 })
	waitUntil(t, 10*time.Second, "the commit up to the failing record", func() bool {
		return kafkatest.CommittedOffsets(t, brokers, group, topic)[0] == stuck
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if got := kafkatest.CommittedOffsets(t, brokers, group, topic)[0]; got != stuck {
		t.Fatalf("committed %d after close, want exactly %d", got, stuck)
	}
}

// Guards invariant 8's last clause: when the dead-letter write fails, the
// partition stops advancing at the record: nothing after it is handled and the
// commit does not pass it.
func TestDeadLetterTopicThatCanNeverBeWrittenStopsRun(t *testing.T) {
	const n, poison = 300, 120
	brokers, topic, cfg := onePartition(t, n, produce100)
	group := cfg.Group
	cfg.Batch = batcher.Policy{MaxRecords: 50, MaxWait: 10 * time.Millisecond}
	// A name Kafka refuses: it collides with an existing topic (they differ
	// only in '.' versus '_'), so it can be neither created nor written.
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := kafkatest.Admin(t, brokers).CreateTopic(context.Background(), 1, 1, nil, "dlq_collide_"+suffix); err != nil {
		t.Fatal(err)
	}
	cfg.DeadLetter = &DeadLetter{Topic: func(string) string { return "dlq.collide." + suffix }}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 1}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	var after atomic.Int64
	m := startMember(t, cfg, poisonAt(poison, &after))
	select {
	case err := <-m.done:
		m.done <- err
		if !errors.Is(err, kerr.InvalidTopicException) {
			t.Fatalf("Run = %v, want the refused dead-letter topic", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running 30s after the dead-letter topic was refused")
	}
	if got := kafkatest.CommittedOffsets(t, brokers, group, topic)[0]; got != poison {
		t.Fatalf("committed %d, want %d: the commit passed a record whose dead-letter write failed", got, poison)
	}
	if after.Load() != 0 {
		t.Fatalf("%d records after the stalled one were handled", after.Load())
	}
}

// Guards invariant 8's other half: a dead-letter write that fails for a
// while (the broker answers NOT_ENOUGH_REPLICAS) stalls the partition at the
// record, retried, never committed past, and the partition goes on once the
// write passes. Runs on an embedded cluster that refuses the first produce
// requests.
func TestFailingDeadLetterWriteStallsThePartitionUntilItPasses(t *testing.T) {
	const topic, n, poison = "stall", 300, 120
	cluster, brokers := embeddedWithDeadLetter(t, topic)
	kafkatest.Produce(t, brokers, topic, n, value100)
	var refuse atomic.Bool
	refuse.Store(true)
	refuseProduce(cluster, kerr.NotEnoughReplicas, refuse.Load)
	cfg := baseConfig(t, topic, "stall-group")
	cfg.Brokers = brokers
	cfg.DeadLetter = &DeadLetter{}
	cfg.CommitTimeout = 300 * time.Millisecond // bounds each dead-letter write too
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 3}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	var after atomic.Int64
	m := startMember(t, cfg, poisonAt(poison, &after))
	waitUntil(t, 30*time.Second, "dead-letter write failures", func() bool { return m.c.Stats().DeadLetterErrors >= 3 })
	waitUntil(t, 10*time.Second, "the commit up to the poison record", func() bool {
		return kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0] == poison
	})
	if after.Load() != 0 {
		t.Fatalf("%d records after the stalled one were handled while its dead-letter write failed", after.Load())
	}
	refuse.Store(false)
	waitUntil(t, 30*time.Second, "the partition to go on once the write passes", func() bool {
		return kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0] == n
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if s := m.c.Stats(); s.DeadLettered != 1 {
		t.Fatalf("dead-lettered %d, want 1", s.DeadLettered)
	}
}

// Guards Permanent: the record goes to the dead-letter topic at once, without
// retries, and the records before it in the batch count as handled.
func TestPermanentErrorDeadLettersAtOnce(t *testing.T) {
	const n, bad = 200, 77
	brokers, topic, cfg := onePartition(t, n, produce100)
	group := cfg.Group
	cfg.DeadLetter = &DeadLetter{Topic: func(s string) string { return s + "-dead" }}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	var calls atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		for i, r := range b.Records {
			if r.Offset == bad {
				calls.Add(1)
				return FailedAt(i, Permanent(errors.New("schema violation")))
			}
		}
		return nil
	})
	waitUntil(t, 30*time.Second, "the commit to the end", func() bool {
		return kafkatest.CommittedOffsets(t, brokers, group, topic)[0] == n
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 {
		t.Fatalf("the bad record was handed out %d times, want 1", calls.Load())
	}
	dlq := readAll(t, brokers, topic+"-dead", 1, 10*time.Second)
	if len(dlq) != 1 || header(dlq[0], HeaderSourceOffset) != strconv.Itoa(bad) || header(dlq[0], HeaderAttempts) != "1" {
		t.Fatalf("dead-letter records = %d, want the one at %d with 1 attempt", len(dlq), bad)
	}
}

// poisonAt is a handler that fails the record at offset poison permanently
// and counts in after the records past it that it handled.
func poisonAt(poison int64, after *atomic.Int64) Handler {
	return func(_ context.Context, b *Batch) error {
		for i, r := range b.Records {
			if r.Offset == poison {
				return FailedAt(i, Permanent(errors.New("poison")))
			}
			if r.Offset > poison {
				after.Add(1)
			}
		}
		return nil
	}
}
