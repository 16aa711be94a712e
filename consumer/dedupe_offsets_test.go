package consumer

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// offsetSpy is a memory store that records the keys and offsets of its
// BeginOffsets calls.
type offsetSpy struct {
	*dedupe.Memory
	mu     sync.Mutex
	keys   [][]string
	offs   [][]int64
	plains int // Begin calls with string keys
}

func (s *offsetSpy) BeginOffsets(ctx context.Context, p dedupe.Partition, keys []string, offs []int64, out []dedupe.Entry) error {
	s.mu.Lock()
	s.keys = append(s.keys, slices.Clone(keys))
	s.offs = append(s.offs, slices.Clone(offs))
	s.mu.Unlock()
	return s.Memory.BeginOffsets(ctx, p, keys, offs, out)
}

func (s *offsetSpy) Begin(ctx context.Context, p dedupe.Partition, keys []string) ([]dedupe.Entry, error) {
	s.mu.Lock()
	s.plains++
	s.mu.Unlock()
	return s.Memory.Begin(ctx, p, keys)
}

// plainStore hides every method of its store but Store's, as a
// third-party store has them.
type plainStore struct{ dedupe.Store }

// TestFallbackKeysGoToAnOffsetStoreByOffset guards the per-batch cost of
// dedupe: with a store that takes fallback keys by offset, the consumer
// hands it the records' offsets (no key strings built and parsed back per
// record), while the handler still sees each record's key as a string
// (Batch.Key) and its markers (Batch.Mark) across a retry; a store with
// Store's methods only gets strings, with the same outcome.
func TestFallbackKeysGoToAnOffsetStoreByOffset(t *testing.T) {
	for _, c := range []struct {
		name     string
		byOffset bool
	}{{"an OffsetStore gets offsets", true}, {"a Store gets strings", false}} {
		t.Run(c.name, func(t *testing.T) {
			brokers := kafkatest.Brokers(t)
			topic := kafkatest.NewTopic(t, 1)
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
			if err != nil {
				t.Fatal(err)
			}
			err = cl.ProduceSync(context.Background(),
				&kgo.Record{Value: []byte("a")},
				&kgo.Record{Value: []byte("b")},
				&kgo.Record{Value: []byte("c"), Headers: []kgo.RecordHeader{{Key: dedupe.DefaultHeader, Value: []byte("h")}}},
				&kgo.Record{Value: []byte("d")},
			).FirstErr()
			cl.Close()
			if err != nil {
				t.Fatal(err)
			}
			mem := dedupe.NewMemory(dedupe.MemoryOptions{})
			spy := &offsetSpy{Memory: mem}
			var store dedupe.Store = spy
			if !c.byOffset {
				store = plainStore{spy}
			}
			cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
			cfg.Batch = batcher.Policy{MaxRecords: 4, MaxWait: 5 * time.Second}
			cfg.Dedupe = &Dedupe{Store: store}
			cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
			cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
			var mu sync.Mutex
			var keys []string
			markedSeen := false
			calls := 0
			m := startMember(t, cfg, func(ctx context.Context, b *Batch) error {
				mu.Lock()
				defer mu.Unlock()
				calls++
				for i, r := range b.Records {
					want := dedupe.OffsetKey(topic, 0, r.Offset)
					if r.Offset == 2 {
						want = "h"
					}
					if got := b.Key(i); got != want {
						t.Errorf("Key of offset %d = %q, want %q", r.Offset, got, want)
					}
					keys = append(keys, b.Key(i))
					if r.Offset == 1 {
						if b.HasMarker(i, "charged") {
							markedSeen = true
							continue
						}
						if err := b.Mark(ctx, i, "charged"); err != nil {
							return err
						}
						return errors.New("failing after the mark")
					}
				}
				return nil
			})
			waitCommitted(t, brokers, cfg.Group, topic, 4)
			if err := m.stop(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !markedSeen {
				t.Errorf("offset 1's marker was not seen on its retry (%d handler calls, keys %q)", calls, keys)
			}
			spy.mu.Lock()
			defer spy.mu.Unlock()
			if c.byOffset {
				if spy.plains != 0 || len(spy.keys) == 0 {
					t.Fatalf("%d Begin calls with strings, %d by offset: want every one by offset", spy.plains, len(spy.keys))
				}
				if !slices.Equal(spy.keys[0], []string{"", "", "h", ""}) || !slices.Equal(spy.offs[0], []int64{0, 1, 2, 3}) {
					t.Errorf("first BeginOffsets: keys %q, offsets %v; want the fallback keys as offsets 0, 1, 3 and h", spy.keys[0], spy.offs[0])
				}
			} else if len(spy.keys) != 0 || spy.plains == 0 {
				t.Errorf("%d Begin calls with strings, %d by offset through a Store with Store's methods only", spy.plains, len(spy.keys))
			}
			// The store holds them all done, whichever way they came.
			p := dedupe.Partition{Topic: topic, Partition: 0}
			ctx := context.Background()
			if err := mem.Assign(ctx, p); err != nil {
				t.Fatal(err)
			}
			es, err := mem.Lookup(ctx, p, []string{dedupe.OffsetKey(topic, 0, 0), dedupe.OffsetKey(topic, 0, 1), "h", dedupe.OffsetKey(topic, 0, 3)})
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range es {
				if !e.Done {
					t.Errorf("key %d not done in the store: %+v", i, e)
				}
			}
		})
	}
}

// TestAppendToRecordsLeavesTheBatchAlone guards the tracked path's Records
// being a copy for each delivery (handing out the batch's own slice, to
// save the copy, failed it): a handler that reuses Batch.Records (an
// append to a shorter slice of it, a filter in place) must not overwrite
// the records a retry hands out.
func TestAppendToRecordsLeavesTheBatchAlone(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 1)
	kafkatest.Produce(t, brokers, topic, 6, func(i int) []byte { return []byte{byte('a' + i)} })
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Batch = batcher.Policy{MaxRecords: 6, MaxWait: 5 * time.Second}
	cfg.Dedupe = &Dedupe{Store: dedupe.NewMemory(dedupe.MemoryOptions{})}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	var mu sync.Mutex
	got := map[int64]string{}
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range b.Records {
			got[r.Offset] = string(r.Value)
		}
		if len(b.Records) > 1 {
			// The first three handled, then a failure at the fourth,
			// after scribbling past the end of Records[:3].
			_ = append(b.Records[:3], &kgo.Record{Offset: 99, Value: []byte("forged")})
			return &PartialError{Index: 3, Err: errors.New("fourth fails once")}
		}
		return nil
	})
	waitCommitted(t, brokers, cfg.Group, topic, 6)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for o := int64(0); o < 6; o++ {
		if want := string([]byte{byte('a' + o)}); got[o] != want {
			t.Errorf("offset %d handed out as %q, want %q (all: %v)", o, got[o], want, got)
		}
	}
}
