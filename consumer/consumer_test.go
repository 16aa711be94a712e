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
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

func value100(i int) []byte { return []byte(fmt.Sprintf("%-100d", i)) }

func baseConfig(t *testing.T, topic, group string) Config {
	return Config{
		Brokers: kafkatest.Brokers(t),
		Group:   group,
		Topics:  []string{topic},
		Batch:   batcher.Policy{MaxRecords: 500, MaxBytes: 1 << 20, MaxWait: 50 * time.Millisecond},
		Commit:  offsets.Policy{EveryRecords: 20000, Interval: time.Second},
	}
}

var protocols = []Protocol{ProtocolClassic, ProtocolConsumer}

// Guards invariants 1, 2 and 4 together: with members joining and leaving
// gracefully while 200k records flow, every record is handled exactly once,
// in offset order per partition, and the group ends committed at the end
// offsets. A revoked partition whose final offset were not committed before
// its new owner started would show up as duplicates; a commit sent for a
// partition given away would rewind it and show up the same way.
func TestMembersJoinAndLeaveNothingLostNoDuplicates(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.String(), func(t *testing.T) {
			const n, parts = 200_000, 8
			brokers := kafkatest.Brokers(t)
			topic := kafkatest.NewTopic(t, parts)
			if err := kafkatest.ProduceN(context.Background(), brokers, topic, n, parts, value100); err != nil {
				t.Fatal(err)
			}
			group := kafkatest.NewGroup(t)
			cfg := baseConfig(t, topic, group)
			cfg.Protocol = proto
			hook := &requestCounter{}
			cfg.ClientOpts = []kgo.Opt{kgo.WithHooks(hook)}
			l := newLedger()
			h := func(ctx context.Context, b *Batch) error {
				l.add(b)
				time.Sleep(time.Millisecond) // enough work that rebalances land mid-stream
				return nil
			}
			m1 := startMember(t, cfg, h)
			m2 := startMember(t, cfg, h)
			waitUntil(t, 60*time.Second, "a third of the records", func() bool { return l.distinct.Load() >= n/3 })
			m3 := startMember(t, cfg, h)
			waitUntil(t, 60*time.Second, "m3 to own partitions", func() bool { return len(m3.c.Assigned()) > 0 })
			waitUntil(t, 60*time.Second, "two thirds of the records", func() bool { return l.distinct.Load() >= 2*n/3 })
			if err := m1.stop(); err != nil {
				t.Fatalf("m1 stop: %v", err)
			}
			waitUntil(t, 90*time.Second, "all records", func() bool { return l.distinct.Load() >= n })
			var stats []Stats
			for _, m := range []*member{m1, m2, m3} {
				if err := m.stop(); err != nil {
					t.Fatal(err)
				}
				stats = append(stats, m.c.Stats())
			}
			// kgo silently falls back to the classic protocol when KIP-848
			// is not usable: check which one really ran.
			if got848 := hook.count(kmsg.ConsumerGroupHeartbeat) > 0; got848 != (proto == ProtocolConsumer) {
				t.Fatalf("protocol %s: KIP-848 heartbeats sent = %v", proto, got848)
			}
			end := kafkatest.EndOffsets(t, brokers, topic)
			lost, dups, disorder := l.check(end)
			if lost != 0 || dups != 0 || disorder != 0 {
				t.Fatalf("lost %d, duplicates %d, out of order %d", lost, dups, disorder)
			}
			committed := kafkatest.CommittedOffsets(t, brokers, group, topic)
			for p, e := range end {
				if committed[p] != e {
					t.Errorf("partition %d committed at %d, end offset %d", p, committed[p], e)
				}
			}
			var commits, batches, rebalances int64
			for _, s := range stats {
				commits += s.Commits
				batches += s.Batches
				rebalances += s.Rebalances
			}
			t.Logf("commits %d, batches %d, rebalances %d", commits, batches, rebalances)
			// Invariant 3: the window, not one commit per batch.
			if commits >= batches/4 {
				t.Fatalf("%d commits for %d batches: commits are not windowed", commits, batches)
			}
		})
	}
}

// Guards invariant 3: with only the record window, the number of commits is
// about records/EveryRecords plus the one on close, not one per batch. The
// handler holds the records past the third window until a commit has landed:
// that proves the count window commits with no interval and no close, and
// keeps the test from depending on how fast 100,000 records are handled next
// to a commit's round trip (windows that close while a commit is in flight
// are folded into the next one).
func TestCommitCountFollowsThePolicy(t *testing.T) {
	const n, parts = 100_000, 4
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	if err := kafkatest.ProduceN(context.Background(), brokers, topic, n, parts, value100); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Commit = offsets.Policy{EveryRecords: 10000, Interval: -1}
	var (
		handled atomic.Int64
		c       atomic.Pointer[Consumer]
		gated   atomic.Bool
	)
	m := startMember(t, cfg, func(ctx context.Context, b *Batch) error {
		if handled.Add(int64(len(b.Records))) >= 30_000 && !gated.Load() {
			deadline := time.Now().Add(30 * time.Second)
			for cons := c.Load(); cons == nil || cons.Stats().Commits == 0; cons = c.Load() {
				if time.Now().After(deadline) || ctx.Err() != nil {
					return Permanent(errors.New("no commit after three windows of records"))
				}
				time.Sleep(time.Millisecond)
			}
			gated.Store(true)
		}
		return nil
	})
	c.Store(m.c)
	waitUntil(t, 60*time.Second, "all records", func() bool { return handled.Load() >= n })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	s := m.c.Stats()
	t.Logf("records %d, batches %d, commits %d", s.Records, s.Batches, s.Commits)
	if !gated.Load() || s.DeadLettered > 0 {
		t.Fatalf("no commit landed while the records of three windows waited (dead-lettered %d)", s.DeadLettered)
	}
	// 10 windows, plus the close: at least the one that landed during the
	// run and one for the records after it, never more than 11.
	if s.Commits < 2 || s.Commits > 11 {
		t.Fatalf("commits = %d, want between 2 and 11 (10 windows + close)", s.Commits)
	}
	if s.Batches < 4*s.Commits {
		t.Fatalf("batches %d vs commits %d", s.Batches, s.Commits)
	}
}

// Guards invariant 6: with a slow handler and a large backlog, the records
// and bytes held never exceed the bounds; fetching pauses instead.
func TestBufferedRecordsStayUnderTheBound(t *testing.T) {
	const n, parts = 60_000, 4
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	if err := kafkatest.ProduceN(context.Background(), brokers, topic, n, parts, value100); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Batch = batcher.Policy{MaxRecords: 100, MaxWait: 10 * time.Millisecond}
	cfg.MaxBufferedRecords = 1000
	cfg.MaxBufferedBytes = 200 * 1000 // about 1500 records of ~105 bytes
	var handled atomic.Int64
	m := startMember(t, cfg, func(ctx context.Context, b *Batch) error {
		handled.Add(int64(len(b.Records)))
		time.Sleep(2 * time.Millisecond)
		return nil
	})
	waitUntil(t, 60*time.Second, "10k records", func() bool { return handled.Load() >= 10000 })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	s := m.c.Stats()
	t.Logf("peak buffered: %d records, %d bytes; pauses %d", s.PeakBufferedRecords, s.PeakBufferedBytes, s.Pauses)
	if s.PeakBufferedRecords > int64(cfg.MaxBufferedRecords) {
		t.Fatalf("peak %d records held, bound %d", s.PeakBufferedRecords, cfg.MaxBufferedRecords)
	}
	if s.PeakBufferedBytes > int64(cfg.MaxBufferedBytes) {
		t.Fatalf("peak %d bytes held, bound %d", s.PeakBufferedBytes, cfg.MaxBufferedBytes)
	}
	if s.BufferedRecords != 0 || s.BufferedBytes != 0 {
		t.Fatalf("after close %d records / %d bytes still counted as held", s.BufferedRecords, s.BufferedBytes)
	}
}

// Guards the retry contract and "a panic is an error": a failing partition
// retries the same batch while the other partitions go on, and a panic does
// not crash the process.
func TestFailingBatchRetriesWhileOthersGoOn(t *testing.T) {
	const n, parts = 4000, 2
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	if err := kafkatest.ProduceN(context.Background(), brokers, topic, n, parts, value100); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Retry = Retry{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}
	var (
		mu        sync.Mutex
		fails     int
		attempts  []int
		handled   [parts]atomic.Int64
		firstSeen = map[int64]int{}
	)
	l := newLedger()
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		if b.Partition == 0 {
			mu.Lock()
			firstSeen[b.FirstOffset()]++
			if fails < 5 {
				fails++
				attempts = append(attempts, b.Attempt)
				mu.Unlock()
				if fails%2 == 0 {
					panic("boom")
				}
				return errors.New("transient")
			}
			mu.Unlock()
		}
		l.add(b)
		handled[b.Partition].Add(int64(len(b.Records)))
		return nil
	})
	waitUntil(t, 60*time.Second, "all records", func() bool {
		return handled[0].Load()+handled[1].Load() >= n
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 2, 3, 4, 5}; fmt.Sprint(attempts) != fmt.Sprint(want) {
		t.Fatalf("attempts of the failing batch = %v, want %v (the same batch retried)", attempts, want)
	}
	if s := m.c.Stats(); s.HandlerErrors != 5 {
		t.Fatalf("handler errors = %d, want 5", s.HandlerErrors)
	}
	lost, dups, disorder := l.check(kafkatest.EndOffsets(t, brokers, topic))
	if lost+dups+disorder != 0 {
		t.Fatalf("lost %d dups %d disorder %d", lost, dups, disorder)
	}
}

// Guards invariant 7: Close twice is harmless, Close without Run is fine,
// Run after Close refuses, and no goroutine is left (TestMain checks).
func TestCloseTwiceAndCloseWithoutRun(t *testing.T) {
	topic := kafkatest.NewTopic(t, 1)
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	c, err := New(cfg, func(context.Context, *Batch) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}

	m := startMember(t, cfg, func(context.Context, *Batch) error { return nil })
	waitUntil(t, 30*time.Second, "assignment", func() bool { return len(m.c.Assigned()) == 1 })
	for range 2 {
		if err := m.stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// Guards the defaults: each zero field of the batch and commit policies gets
// its own default (setting one field must not turn the others off), and a
// negative value turns a limit off.
func TestPolicyFieldsDefaultOneByOne(t *testing.T) {
	cfg := Config{Batch: batcher.Policy{MaxRecords: 10}, Commit: offsets.Policy{EveryRecords: -1}}.withDefaults()
	if want := (batcher.Policy{MaxRecords: 10, MaxBytes: DefaultMaxBytes, MaxWait: DefaultMaxWait}); cfg.Batch != want {
		t.Fatalf("batch policy = %+v, want %+v", cfg.Batch, want)
	}
	if want := (offsets.Policy{EveryRecords: 0, Interval: DefaultCommitInterval}); cfg.Commit != want {
		t.Fatalf("commit policy = %+v, want %+v", cfg.Commit, want)
	}
	cfg = Config{Batch: batcher.Policy{MaxBytes: -1, MaxWait: -1}}.withDefaults()
	if want := (batcher.Policy{MaxRecords: DefaultMaxRecords}); cfg.Batch != want {
		t.Fatalf("batch policy = %+v, want %+v (byte and time limits off)", cfg.Batch, want)
	}
}

// Guards the Run context as the other way to stop: cancelling it drains and
// commits like Close.
func TestRunContextEndDrainsAndCommits(t *testing.T) {
	const n = 3000
	brokers, topic, cfg := onePartition(t, n, produce100)
	group := cfg.Group
	cfg.Commit = offsets.Policy{EveryRecords: -1, Interval: time.Hour}
	var handled atomic.Int64
	c, err := New(cfg, func(_ context.Context, b *Batch) error { handled.Add(int64(len(b.Records))); return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitUntil(t, 30*time.Second, "all records", func() bool { return handled.Load() >= n })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := kafkatest.CommittedOffsets(t, brokers, group, topic)[0]; got != n {
		t.Fatalf("committed %d after the context ended, want %d", got, n)
	}
	_ = c.Close()
}

// Guards invariant 8's last clause: New refuses bad configuration with an
// error that names the field.
func TestNewRefusesInvalidConfigNamingTheField(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:1"}, Group: "g", Topics: []string{"t"}}
	h := func(context.Context, *Batch) error { return nil }
	for i, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"Brokers", func(c *Config) { c.Brokers = nil }},
		{"Brokers[0]", func(c *Config) { c.Brokers = []string{""} }},
		{"Group", func(c *Config) { c.Group = "" }},
		{"Topics", func(c *Config) { c.Topics = nil }},
		{"Topics[1]", func(c *Config) { c.Topics = []string{"a", "a"} }},
		{"Topics[0]", func(c *Config) { c.Topics = []string{"bad topic!"} }},
		{"Topics[0]", func(c *Config) { c.Topics = []string{".."} }},
		{"Topics[0]", func(c *Config) { c.Topics = []string{strings.Repeat("x", 250)} }},
		{"Topics[1]", func(c *Config) { c.Topics = []string{"ok", "orders/eu"} }},
		{"DeadLetter.Topic", func(c *Config) {
			c.DeadLetter = &DeadLetter{Topic: func(s string) string { return s + " dlq" }}
		}},
		{"Batch", func(c *Config) { c.Batch = batcher.Policy{MaxRecords: -1} }},
		{"Commit", func(c *Config) { c.Commit = offsets.Policy{EveryRecords: -1, Interval: -1} }},
		{"MaxBufferedRecords", func(c *Config) { c.MaxBufferedRecords = 10 }},
		{"MaxBufferedBytes", func(c *Config) { c.MaxBufferedBytes = -1 }},
		{"DrainTimeout", func(c *Config) { c.DrainTimeout = -time.Second }},
		{"Retry.Max", func(c *Config) { c.Retry = Retry{Initial: time.Second, Max: time.Millisecond} }},
		{"Reset", func(c *Config) { c.Reset = 7 }},
		{"Protocol", func(c *Config) { c.Protocol = 9 }},
	} {
		t.Run(fmt.Sprintf("%d/%s", i, tc.field), func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			_, err := New(cfg, h)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New = %v, want a ConfigError naming %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
		})
	}
	if _, err := New(ok, nil); err == nil {
		t.Fatal("nil handler accepted")
	}
}

// requestCounter counts the requests a client writes, by key.
type requestCounter struct {
	mu sync.Mutex
	n  map[int16]int
}

func (r *requestCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[int16]int{}
	}
	r.n[key]++
}

func (r *requestCounter) count(k kmsg.Key) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[int16(k)]
}
