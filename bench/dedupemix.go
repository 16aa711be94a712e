//go:build !memchild

package main

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/dedupe"
)

// The key mix of the kbatch-dedupe-mix scenarios: one record in ten
// (offsets 7, 17, 27... from offset 100 on) repeats the idempotency key of a
// record 1 to 97 offsets before it in its partition, a producer retry or a
// client resending within the last minute; the others carry a key of
// their own. The repeats are not handed to the handler (their first copy
// is done, in the same batch or an earlier one).
func mixOriginal(offset int64) int64 {
	for offset >= 100 && offset%10 == 7 {
		offset -= 1 + offset%97
	}
	return offset
}

// mixKeyFunc returns the scenario's KeyFunc: the key of a record's
// original, "order-<partition>-<offset>". A repeat is marked received in
// the checker here, since it never reaches the handler; if the store
// handed it out anyway, the handler would mark it a second time and the
// checker would count a duplicate.
func mixKeyFunc(env *Env) dedupe.KeyFunc {
	return func(r *kgo.Record) (string, bool) {
		orig := mixOriginal(r.Offset)
		if orig != r.Offset {
			env.Check.MarkOne(r.Partition, r.Offset, len(r.Key)+len(r.Value))
		}
		b := make([]byte, 0, 32)
		b = append(b, "order-"...)
		b = strconv.AppendInt(b, int64(r.Partition), 10)
		b = append(b, '-')
		b = strconv.AppendInt(b, orig, 10)
		return string(b), true
	}
}

// timedStore measures the time a consumer spends in its dedupe store.
type timedStore struct {
	dedupe.Store
	ns atomic.Int64
}

func (s *timedStore) since(start time.Time) { s.ns.Add(int64(time.Since(start))) }

func (s *timedStore) Lookup(ctx context.Context, p dedupe.Partition, keys []string) ([]dedupe.Entry, error) {
	defer s.since(time.Now())
	return s.Store.Lookup(ctx, p, keys)
}

func (s *timedStore) Begin(ctx context.Context, p dedupe.Partition, keys []string) ([]dedupe.Entry, error) {
	defer s.since(time.Now())
	return s.Store.Begin(ctx, p, keys)
}

func (s *timedStore) Done(ctx context.Context, p dedupe.Partition, keys []string) error {
	defer s.since(time.Now())
	return s.Store.Done(ctx, p, keys)
}

// runDedupeMix runs kbatch with store and the key mix, and reports the
// store's time per batch (µs) with the counters.
func runDedupeMix(ctx context.Context, env *Env, store dedupe.Store) (Outcome, error) {
	ts := &timedStore{Store: store}
	cfg := kbatchConfig(env)
	cfg.Dedupe = &consumer.Dedupe{Store: ts, Key: mixKeyFunc(env)}
	out, err := runKbatchWith(ctx, env, cfg, countingHandler(env))
	if b := out.Client["batches"]; b > 0 {
		out.Client["store_us_per_batch"] = ts.ns.Load() / 1000 / b
	}
	return out, err
}

// runKbatchDedupeMixMemory is the key mix with the memory store.
func runKbatchDedupeMixMemory(ctx context.Context, env *Env) (Outcome, error) {
	store := dedupe.NewMemory(dedupe.MemoryOptions{})
	out, err := runDedupeMix(ctx, env, store)
	return out, errors.Join(err, store.Close())
}

// runKbatchDedupeMixKafka is the key mix with the Kafka store.
func runKbatchDedupeMixKafka(ctx context.Context, env *Env) (Outcome, error) {
	store, closeStore, err := openKafkaStore(ctx, env)
	if err != nil {
		return Outcome{OwnCommits: -1}, err
	}
	out, err := runDedupeMix(ctx, env, store)
	return out, errors.Join(err, closeStore())
}
