package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// produceKeyed writes n records carrying an Idempotency-Key header "order-i".
func produceKeyed(t *testing.T, brokers []string, topic string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Value: value100(i), Headers: []kgo.RecordHeader{{Key: dedupe.DefaultHeader, Value: fmt.Appendf(nil, "order-%d", i)}}}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// Guards invariant 5's skip: a key recorded done is not handed to a handler
// again, here by a second group replaying the same partition with the same
// store.
func TestDoneKeysAreNotHandedOutAgain(t *testing.T) {
	const n = 1500
	_, _, cfg := onePartition(t, n, produceKeyed)
	store := dedupe.NewMemory(dedupe.MemoryOptions{})
	var handled atomic.Int64
	h := func(_ context.Context, b *Batch) error {
		for i := range b.Records {
			if b.Key(i) != fmt.Sprintf("order-%d", b.Records[i].Offset) {
				return fmt.Errorf("key %q for offset %d", b.Key(i), b.Records[i].Offset)
			}
		}
		handled.Add(int64(len(b.Records)))
		return nil
	}
	cfg.Dedupe = &Dedupe{Store: store}
	m := startMember(t, cfg, h)
	waitUntil(t, 30*time.Second, "all records", func() bool { return handled.Load() == n })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}

	// Another group reads the same records: all are done in the store.
	cfg.Group = kafkatest.NewGroup(t)
	m2 := startMember(t, cfg, h)
	waitUntil(t, 30*time.Second, "all records skipped", func() bool { return m2.c.Stats().Skipped == n })
	if err := m2.stop(); err != nil {
		t.Fatal(err)
	}
	if got := handled.Load(); got != n {
		t.Fatalf("handled %d records, want %d: done keys were handed out again", got, n)
	}
}

// Guards invariant 5's order of writes and the markers: attempts are counted
// before the handler runs (a retry sees 2), done is written only after
// success (a failed delivery is retried, not dropped as the deduplicators of
// other frameworks do), and a marker written by a failed delivery comes back
// with the next one.
func TestAttemptsAndMarkersComeBackOnRetry(t *testing.T) {
	const n = 300
	_, _, cfg := onePartition(t, n, produceKeyed)
	store := dedupe.NewMemory(dedupe.MemoryOptions{})
	cfg.Dedupe = &Dedupe{Store: store}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	var (
		mu       sync.Mutex
		charged  = map[int64]int{}
		emailed  = map[int64]int{}
		failOnce = map[int64]int{} // offset -> attempts when it failed
		badSeen  []string
	)
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
			failedWith, failed := failOnce[r.Offset]
			if r.Offset%50 == 7 && !failed {
				failOnce[r.Offset] = b.Attempts(i)
				return FailedAt(i, errors.New("mail server down"))
			}
			if failed && b.Attempts(i) != failedWith+1 {
				badSeen = append(badSeen, fmt.Sprintf("offset %d failed at attempt %d, retried with attempts %d", r.Offset, failedWith, b.Attempts(i)))
			}
			emailed[r.Offset]++
		}
		return nil
	})
	waitUntil(t, 30*time.Second, "all records", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(emailed) == n
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range badSeen {
		t.Error(s)
	}
	for o := int64(0); o < n; o++ {
		if charged[o] != 1 || emailed[o] != 1 {
			t.Fatalf("offset %d charged %d times, emailed %d times; want once each", o, charged[o], emailed[o])
		}
	}
}

// Guards the poison-record rule with a durable count: records delivered
// alone after a failure, so that only the poison record reaches the
// dead-letter topic, with MaxAttempts handed-out deliveries.
func TestOnlyThePoisonRecordIsDeadLetteredWithAStore(t *testing.T) {
	const n, poison = 400, 150
	brokers, topic, cfg := onePartition(t, n, produceKeyed)
	group := cfg.Group
	cfg.Dedupe = &Dedupe{Store: dedupe.NewMemory(dedupe.MemoryOptions{})}
	cfg.DeadLetter = &DeadLetter{}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 2 * time.Millisecond, MaxAttempts: 4}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	var poisonCalls atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		for _, r := range b.Records {
			if r.Offset == poison {
				poisonCalls.Add(1)
				return errors.New("poison")
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
	if s := m.c.Stats(); s.DeadLettered != 1 {
		t.Fatalf("dead-lettered %d records, want only the poison one", s.DeadLettered)
	}
	if got := poisonCalls.Load(); got != 4 {
		t.Fatalf("poison handed out %d times, want MaxAttempts = 4", got)
	}
}
