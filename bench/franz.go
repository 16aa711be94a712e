package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// franzOpts are the options both franz-go scenarios share: a group member
// reading the topic from its start, dialling through the wire counter.
func franzOpts(env *Env) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(env.Brokers...),
		kgo.ConsumerGroup(env.Group),
		kgo.ConsumeTopics(env.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.Dialer(env.Wire.DialContext),
	}
}

// runFranzRaw is the ceiling: a franz-go poll loop that does nothing with
// the records but count them, with kgo's auto-commit (every 5s, and on close).
func runFranzRaw(ctx context.Context, env *Env) (Outcome, error) {
	cl, err := kgo.NewClient(franzOpts(env)...)
	if err != nil {
		return Outcome{OwnCommits: -1}, err
	}
	defer cl.Close() // commits what was polled, then leaves the group
	ctx, stop := stopWhenComplete(ctx, env.Check)
	defer stop()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			break
		}
		if err := fetchError(fetches); err != nil {
			return Outcome{OwnCommits: -1}, err
		}
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			env.Check.MarkRecords(p.Partition, p.Records)
		})
	}
	return Outcome{OwnCommits: -1}, nil
}

// runFranzSync is the anti-pattern: one synchronous commit after every
// record. It reads only the subset the checker expects.
func runFranzSync(ctx context.Context, env *Env) (Outcome, error) {
	cl, err := kgo.NewClient(append(franzOpts(env), kgo.DisableAutoCommit())...)
	if err != nil {
		return Outcome{OwnCommits: -1}, err
	}
	defer cl.Close()
	ctx, stop := stopWhenComplete(ctx, env.Check)
	defer stop()
	var commits int64
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			break
		}
		if err := fetchError(fetches); err != nil {
			return Outcome{OwnCommits: commits}, err
		}
		var commitErr error
		fetches.EachRecord(func(r *kgo.Record) {
			if commitErr != nil || !env.Check.Expects(r.Partition, r.Offset) {
				return // past the subset: not ours to handle
			}
			if err := cl.CommitRecords(ctx, r); err != nil {
				commitErr = err
				return
			}
			commits++
			env.Check.MarkOne(r.Partition, r.Offset, len(r.Key)+len(r.Value))
		})
		if commitErr != nil {
			if ctx.Err() != nil {
				break
			}
			return Outcome{OwnCommits: commits}, fmt.Errorf("committing: %w", commitErr)
		}
	}
	return Outcome{OwnCommits: commits}, nil
}

// fetchError returns the first fetch error that is not the end of the poll.
func fetchError(fetches kgo.Fetches) error {
	var first error
	fetches.EachError(func(topic string, partition int32, err error) {
		if first != nil || kerr.IsRetriable(err) || errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
			return // kgo retries these itself
		}
		first = fmt.Errorf("fetching %s/%d: %w", topic, partition, err)
	})
	return first
}

// stopWhenComplete returns a context that ends when ctx does or when the
// checker has every record, so that a blocking poll or read returns.
func stopWhenComplete(ctx context.Context, chk *Checker) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-chk.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
