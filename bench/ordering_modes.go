//go:build !memchild

package main

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
)

// orderingModes are kbatch's concurrent orderings at concurrency c: key
// lanes (the handler waits the work per record of its one-key batch) and
// the resequencer (Process waits the work; the handler, the in-order step,
// only records the result).
func orderingModes(c int) []orderingScenario {
	return []orderingScenario{
		{Key: "kbatch-keys", Name: "kbatch, Ordering ByKey (key lanes)", Concurrency: c, PerKeyOrder: true, run: runOrderingByKey},
		{Key: "kbatch-resequence", Name: "kbatch, Ordering Resequence (results in offset order)", Concurrency: c, PerKeyOrder: true, TotalOrder: true, run: runOrderingResequence},
	}
}

func runOrderingByKey(ctx context.Context, e *orderingEnv) (orderingRun, error) {
	cfg := orderingConfig(e)
	cfg.Ordering = consumer.ByKey
	cfg.Concurrency = e.Concurrency
	l := newOrderLedger(e.Records)
	return runKbatchOrdering(ctx, e, cfg, func(ctx context.Context, b *consumer.Batch) error {
		for _, r := range b.Records {
			if err := sleepCtx(ctx, e.Work); err != nil {
				return err
			}
			l.add(r)
		}
		return nil
	}, l)
}

func runOrderingResequence(ctx context.Context, e *orderingEnv) (orderingRun, error) {
	cfg := orderingConfig(e)
	cfg.Ordering = consumer.Resequence
	cfg.Concurrency = e.Concurrency
	cfg.Process = func(ctx context.Context, r *kgo.Record) (any, error) {
		if err := sleepCtx(ctx, e.Work); err != nil {
			return nil, err
		}
		return r.Offset, nil
	}
	l := newOrderLedger(e.Records)
	l.total = true
	return runKbatchOrdering(ctx, e, cfg, func(ctx context.Context, b *consumer.Batch) error {
		for i, r := range b.Records {
			v, err := b.Result(i)
			if err != nil {
				return err
			}
			if off, ok := v.(int64); !ok || off != r.Offset {
				return fmt.Errorf("record %d: result %v is not its own", r.Offset, v)
			}
			l.add(r)
		}
		return nil
	}, l)
}
