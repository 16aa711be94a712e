//go:build !memchild

package main

import (
	"context"
	"errors"
	"time"

	"github.com/segmentio/kafka-go"
)

// commitInterval is the commit interval of the scenarios with interval
// commits, the same as kgo's auto-commit, kbatch's default window and the
// Java client's auto.commit.interval.ms.
const commitInterval = 5 * time.Second

// runKafkaGo is segmentio/kafka-go's Reader in a group, its defaults except
// CommitInterval (its default, 0, commits synchronously after every read).
func runKafkaGo(ctx context.Context, env *Env) (Outcome, error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        env.Brokers,
		GroupID:        env.Group,
		Topic:          env.Topic,
		StartOffset:    kafka.FirstOffset,
		CommitInterval: commitInterval,
		Dialer: &kafka.Dialer{
			Timeout:   10 * time.Second,
			DualStack: true,
			DialFunc:  env.Wire.DialContext,
		},
	})
	ctx, stop := stopWhenComplete(ctx, env.Check)
	defer stop()
	var readErr error
	for {
		m, err := r.ReadMessage(ctx) // marks the message for the next interval commit
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				readErr = err
			}
			break
		}
		env.Check.MarkOne(int32(m.Partition), m.Offset, len(m.Key)+len(m.Value))
	}
	// Close commits the offsets marked since the last interval and leaves.
	return Outcome{OwnCommits: -1}, errors.Join(readErr, r.Close())
}
