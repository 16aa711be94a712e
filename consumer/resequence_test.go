package consumer

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// Guards the Resequence ordering: Process runs concurrently and finishes in a
// random order, yet the handler sees every record once, in offset order, one
// batch at a time, each with its own Process result, and the group ends
// committed at the end.
func TestResequenceHandsResultsInOffsetOrder(t *testing.T) {
	const n = 5000
	brokers, topic, cfg := onePartition(t, n, produce100)
	cfg.Ordering, cfg.Concurrency = Resequence, 16
	var running, peak, outOfOrder atomic.Int64
	var lastDone atomic.Int64
	lastDone.Store(-1)
	cfg.Process = func(ctx context.Context, r *kgo.Record) (any, error) {
		now := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
		}
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		if prev := lastDone.Swap(r.Offset); prev > r.Offset {
			outOfOrder.Add(1) // finished before an earlier record: the order the handler must restore
		}
		return "result-" + strconv.FormatInt(r.Offset, 10), nil
	}
	var mu sync.Mutex
	var seen []int64
	var inHandler atomic.Int64
	var problems []string
	var overlapping atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		if inHandler.Add(1) != 1 {
			overlapping.Add(1)
		}
		defer inHandler.Add(-1)
		mu.Lock()
		defer mu.Unlock()
		for i, r := range b.Records {
			v, err := b.Result(i)
			if want := "result-" + strconv.FormatInt(r.Offset, 10); v != want || err != nil {
				problems = append(problems, "offset "+strconv.FormatInt(r.Offset, 10)+": wrong result")
			}
			seen = append(seen, r.Offset)
		}
		return nil
	})
	waitUntil(t, 60*time.Second, "the commit to the end", func() bool {
		return kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0] == n
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if overlapping.Load() > 0 {
		t.Fatalf("%d handler calls overlapped another: the in-order step ran concurrently", overlapping.Load())
	}
	if len(problems) > 0 {
		t.Fatalf("%d problems, first: %s", len(problems), problems[0])
	}
	if len(seen) != n {
		t.Fatalf("handler saw %d records, want %d", len(seen), n)
	}
	for i, o := range seen {
		if o != int64(i) {
			t.Fatalf("record %d of the handler was offset %d: not in offset order", i, o)
		}
	}
	if peak.Load() < 4 || outOfOrder.Load() == 0 {
		t.Fatalf("Process peak concurrency %d, finished out of order %d times: the test did not test reordering", peak.Load(), outOfOrder.Load())
	}
}

// Guards the Process failure rules of Resequence: an error is retried until
// Process succeeds, a Permanent error reaches the handler through
// Batch.Result, and the handler can dead-letter that record.
func TestResequenceRetriesProcessAndHandsOverPermanentErrors(t *testing.T) {
	const n, flaky, bad = 300, 40, 77
	brokers, topic, cfg := onePartition(t, n, produce100)
	cfg.Ordering, cfg.Concurrency = Resequence, 8
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	cfg.DeadLetter = &DeadLetter{}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	var flakyTries atomic.Int64
	cfg.Process = func(_ context.Context, r *kgo.Record) (any, error) {
		switch r.Offset {
		case flaky:
			if flakyTries.Add(1) < 3 {
				return nil, errors.New("try again")
			}
		case bad:
			return nil, Permanent(errors.New("cannot be processed"))
		}
		return r.Offset, nil
	}
	var handled atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		for i := range b.Records {
			v, err := b.Result(i)
			if err != nil {
				return FailedAt(i, err)
			}
			if v != b.Records[i].Offset {
				return errors.New("wrong result")
			}
			handled.Add(1)
		}
		return nil
	})
	waitUntil(t, 30*time.Second, "the commit to the end", func() bool {
		return kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0] == n
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if flakyTries.Load() != 3 || handled.Load() != n-1 {
		t.Fatalf("flaky record processed %d times (want 3), %d records handled (want %d)", flakyTries.Load(), handled.Load(), n-1)
	}
	dlq := readAll(t, brokers, topic+".dlq", 1, 10*time.Second)
	if len(dlq) != 1 || header(dlq[0], HeaderSourceOffset) != strconv.Itoa(bad) {
		t.Fatalf("dead-letter records = %d, want the one at %d", len(dlq), bad)
	}
}

// Guards Resequence across rebalances: with a member joining and one leaving
// (revoke drains the handler's batch, then commits), every record reaches a
// handler exactly once and in offset order per partition.
func TestResequenceAcrossRebalancesNothingLostNoDuplicates(t *testing.T) {
	const n, parts = 20000, 4
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	if err := kafkatest.ProduceN(context.Background(), brokers, topic, n, parts, value100); err != nil {
		t.Fatal(err)
	}
	group := kafkatest.NewGroup(t)
	cfg := baseConfig(t, topic, group)
	cfg.Ordering, cfg.Concurrency = Resequence, 8
	cfg.Process = func(_ context.Context, r *kgo.Record) (any, error) {
		time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
		return r.Offset, nil
	}
	l := newLedger()
	var wrong atomic.Int64
	h := func(_ context.Context, b *Batch) error {
		for i, r := range b.Records {
			if v, _ := b.Result(i); v != r.Offset {
				wrong.Add(1)
			}
		}
		l.add(b)
		return nil
	}
	m1 := startMember(t, cfg, h)
	waitUntil(t, 60*time.Second, "a third of the records", func() bool { return l.distinct.Load() >= n/3 })
	m2 := startMember(t, cfg, h)
	waitUntil(t, 60*time.Second, "m2 to own partitions", func() bool { return len(m2.c.Assigned()) > 0 })
	waitUntil(t, 60*time.Second, "two thirds of the records", func() bool { return l.distinct.Load() >= 2*n/3 })
	if err := m1.stop(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 90*time.Second, "all records", func() bool { return l.distinct.Load() >= n })
	if err := m2.stop(); err != nil {
		t.Fatal(err)
	}
	end := kafkatest.EndOffsets(t, brokers, topic)
	if lost, dups, disorder := l.check(end); lost != 0 || dups != 0 || disorder != 0 || wrong.Load() != 0 {
		t.Fatalf("lost %d, duplicates %d, out of order %d, wrong results %d", lost, dups, disorder, wrong.Load())
	}
	committed := kafkatest.CommittedOffsets(t, brokers, group, topic)
	for p, e := range end {
		if committed[p] != e {
			t.Errorf("partition %d committed at %d, end offset %d", p, committed[p], e)
		}
	}
}
