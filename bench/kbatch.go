package main

import (
	"context"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
)

// kbatchConfig is kbatch's Config with nothing but what the bench must set:
// every tunable keeps its default.
func kbatchConfig(env *Env) consumer.Config {
	return consumer.Config{
		Brokers:    env.Brokers,
		Group:      env.Group,
		Topics:     []string{env.Topic},
		ClientOpts: []kgo.Opt{kgo.Dialer(env.Wire.DialContext)},
		// The default, slog.Default(), would print rebalance lines into
		// the table's output and cost the measured process its writes.
		Logger: slog.New(slog.DiscardHandler),
		Batch:  batcher.Policy{MaxRecords: env.BatchRecs}, // 0: the default
	}
}

// runKbatch is kbatch with its defaults and a handler that only counts.
func runKbatch(ctx context.Context, env *Env) (Outcome, error) {
	return runKbatchWith(ctx, env, kbatchConfig(env), countingHandler(env))
}

// runKbatchWork is kbatch with a handler that works like a small sink: it
// reads every value (a checksum) and then waits env.Work, as for one round
// trip to a database per batch.
func runKbatchWork(ctx context.Context, env *Env) (Outcome, error) {
	return runKbatchWith(ctx, env, kbatchConfig(env), func(ctx context.Context, b *consumer.Batch) error {
		h := fnv.New64a()
		for _, r := range b.Records {
			_, _ = h.Write(r.Value)
		}
		sink.Add(h.Sum64())
		if env.Work > 0 {
			t := time.NewTimer(env.Work)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		env.Check.MarkRecords(b.Partition, b.Records)
		return nil
	})
}

// The memory check's consumer bounds (the acceptance test's figures).
const (
	boundedKey        = "kbatch-bounded"
	boundedMaxRecords = 5000
	boundedMaxBytes   = 8 << 20
)

// runKbatchBounded is kbatch with MaxBufferedRecords 5000 and
// MaxBufferedBytes 8 MiB and a slow handler: it waits env.RecordWait per
// record of the batch, so the buffer stays full while the backlog lasts.
func runKbatchBounded(ctx context.Context, env *Env) (Outcome, error) {
	cfg := kbatchConfig(env)
	cfg.MaxBufferedRecords = boundedMaxRecords
	cfg.MaxBufferedBytes = boundedMaxBytes
	return runKbatchWith(ctx, env, cfg, func(ctx context.Context, b *consumer.Batch) error {
		if d := env.RecordWait * time.Duration(len(b.Records)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		env.Check.MarkRecords(b.Partition, b.Records)
		return nil
	})
}

// runKbatchWith runs a kbatch consumer until the checker is complete, then
// closes it (drain, final commit, leave) and reports its commit count and
// counters.
func runKbatchWith(ctx context.Context, env *Env, cfg consumer.Config, h consumer.Handler) (Outcome, error) {
	c, err := consumer.New(cfg, h)
	if err != nil {
		return Outcome{OwnCommits: -1}, err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	select {
	case <-env.Check.Done():
		_ = c.Close()
		err = <-runErr
	case <-ctx.Done():
		_ = c.Close()
		err = <-runErr
	case err = <-runErr: // stopped on its own: the harness reports what is missing
	}
	st := c.Stats()
	client := map[string]int64{
		"batches":               st.Batches,
		"pauses":                st.Pauses,
		"peak_buffered_records": st.PeakBufferedRecords,
		"peak_buffered_bytes":   st.PeakBufferedBytes,
		"rebalances":            st.Rebalances,
		"handler_errors":        st.HandlerErrors,
		"commit_errors":         st.CommitErrors,
		"skipped":               st.Skipped,
		"fetch_max_bytes":       st.FetchMaxBytes,
	}
	// Why batches were cut (flush_records, flush_wait, flush_buffer...):
	// many small batches show up here first.
	for _, r := range consumer.FlushReasons {
		if n := st.Flushes[r]; n > 0 {
			client["flush_"+r.String()] = n
		}
	}
	return Outcome{OwnCommits: st.Commits, Client: client}, err
}

// sink keeps the simulated work's results alive so the compiler cannot drop
// the work.
var sink atomic.Uint64

// countingHandler marks every batch with the checker and does nothing else.
func countingHandler(env *Env) consumer.Handler {
	return func(_ context.Context, b *consumer.Batch) error {
		env.Check.MarkRecords(b.Partition, b.Records)
		return nil
	}
}
