package consumer

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// Guards the lag gauges across a rebalance: each partition is reported by
// its owner only (a revoked partition's series go away), the lag comes from
// the owner's own fetches, and it falls to 0 on every member once the
// records are handled. A lag kept from before the rebalance (as kafka-go's
// is) would stay above 0 on the member that gave the partition away.
func TestLagStaysRightAcrossARebalance(t *testing.T) {
	const n, parts = 8000, 4
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	if err := kafkatest.ProduceN(context.Background(), brokers, topic, n, parts, value100); err != nil {
		t.Fatal(err)
	}
	end := kafkatest.EndOffsets(t, brokers, topic)
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Batch = batcher.Policy{MaxRecords: 100, MaxWait: 10 * time.Millisecond}
	var slow atomic.Bool
	slow.Store(true)
	var handled atomic.Int64
	h := func(ctx context.Context, b *Batch) error {
		if slow.Load() {
			time.Sleep(20 * time.Millisecond)
		}
		handled.Add(int64(len(b.Records)))
		return nil
	}
	m1 := startMember(t, cfg, h)
	waitUntil(t, 30*time.Second, "m1 lagging on every partition", func() bool {
		ps := m1.c.Partitions()
		lagging := 0
		for _, p := range ps {
			if p.HighWatermark != end[p.Partition] {
				return false
			}
			if p.LagRecords > 0 && p.LagRecords <= end[p.Partition] {
				lagging++
			}
		}
		return lagging == parts
	})
	m2 := startMember(t, cfg, h)
	waitUntil(t, 60*time.Second, "the partitions split between the members", func() bool {
		return len(m1.c.Partitions()) > 0 && len(m2.c.Partitions()) > 0 && len(m1.c.Partitions())+len(m2.c.Partitions()) == parts
	})
	seen := map[int32]int{}
	for _, m := range []*member{m1, m2} {
		for _, p := range m.c.Partitions() {
			seen[p.Partition]++
		}
	}
	for p := range int32(parts) {
		if seen[p] != 1 {
			t.Fatalf("partition %d reported by %d members, want exactly its owner", p, seen[p])
		}
	}
	slow.Store(false)
	waitUntil(t, 60*time.Second, "every record handled", func() bool { return handled.Load() >= n })
	defer func() {
		if t.Failed() {
			t.Logf("m1 %+v\nm2 %+v\nend %v", m1.c.Partitions(), m2.c.Partitions(), end)
		}
	}()
	waitUntil(t, 10*time.Second, "lag 0 on both members", func() bool {
		for _, m := range []*member{m1, m2} {
			for _, p := range m.c.Partitions() {
				// A partition its new owner found handled already has
				// nothing fetched: Next unknown (-1), lag 0.
				if p.LagRecords != 0 || p.LagSeconds != 0 || (p.Next >= 0 && p.Next != end[p.Partition]) {
					return false
				}
			}
		}
		return true
	})
	// New records show up as lag on their partition's current owner.
	owner := map[int32]*member{}
	for _, m := range []*member{m1, m2} {
		for _, p := range m.c.Partitions() {
			owner[p.Partition] = m
		}
	}
	slow.Store(true)
	if err := kafkatest.ProduceN(context.Background(), brokers, topic, 4000, parts, value100); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the new records counted as lag or handled by their owners", func() bool {
		for p, m := range owner {
			for _, ps := range m.c.Partitions() {
				if ps.Partition == p && ps.HighWatermark != end[p]+1000 {
					return false
				}
			}
		}
		return true
	})
}

// Guards the stall gauge and liveness: a partition whose handler keeps
// failing (no dead-letter topic, so it retries for ever) shows its records
// waiting for longer and longer, and Health turns not live after
// StallTimeout; the other partition keeps moving and is not stalled.
func TestStalledPartitionIsVisibleAndMakesTheConsumerNotLive(t *testing.T) {
	const n, parts = 400, 2
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	if err := kafkatest.ProduceN(context.Background(), brokers, topic, n, parts, value100); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.StallTimeout = time.Second
	cfg.Retry = Retry{Initial: 20 * time.Millisecond, Max: 50 * time.Millisecond}
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		if b.Partition == 0 {
			return errors.New("sink refuses partition 0")
		}
		return nil
	})
	waitUntil(t, 30*time.Second, "partition 0 stalled past StallTimeout", func() bool {
		for _, p := range m.c.Partitions() {
			if p.Partition == 0 && p.StalledSeconds >= 1 && p.LagSeconds > 0 && p.Buffered > 0 {
				return true
			}
		}
		return false
	})
	h := m.c.Health()
	if h.Live || len(h.Stalled) != 1 || h.Stalled[0].Partition != 0 {
		t.Fatalf("Health = %+v, want not live with partition 0 stalled", h)
	}
	for _, p := range m.c.Partitions() {
		if p.Partition == 1 && (p.StalledSeconds != 0 || p.LagRecords != 0) {
			t.Fatalf("partition 1, which moves, reported %+v", p)
		}
	}
	rec := httptest.NewRecorder()
	m.c.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz answered %d, want 503", rec.Code)
	}
}

// blockingStore is a memory store whose Assign waits until released.
type blockingStore struct {
	dedupe.Store
	release chan struct{}
}

func (s *blockingStore) Assign(ctx context.Context, p offsets.Partition) error {
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.Assign(ctx, p)
}

// Guards readiness: not ready before Run, nor while a partition's dedupe
// state loads; ready once joined and loaded; neither ready nor live after
// Close.
func TestReadinessFollowsJoinLoadAndClose(t *testing.T) {
	_, _, cfg := onePartition(t, 10, produce100)
	st := &blockingStore{Store: dedupe.NewMemory(dedupe.MemoryOptions{}), release: make(chan struct{})}
	cfg.Dedupe = &Dedupe{Store: st}
	c, err := New(cfg, func(context.Context, *Batch) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Health(); h.Ready {
		t.Fatalf("ready before Run: %+v", h)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	waitUntil(t, 30*time.Second, "joined and loading", func() bool { return c.Stats().Rebalances > 0 })
	if h := c.Health(); h.Ready || !h.Live {
		t.Fatalf("Health while the partition loads = %+v, want live and not ready", h)
	}
	rec := httptest.NewRecorder()
	c.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz answered %d while loading, want 503", rec.Code)
	}
	close(st.release)
	waitUntil(t, 30*time.Second, "ready", func() bool { return c.Health().Ready })
	rec = httptest.NewRecorder()
	c.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/readyz answered %d when ready, want 200", rec.Code)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h := c.Health(); h.Ready || h.Live {
		t.Fatalf("Health after Close = %+v", h)
	}
}
