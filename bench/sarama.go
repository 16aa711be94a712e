//go:build !memchild

package main

import (
	"context"
	"errors"

	"github.com/IBM/sarama"
)

// runSarama is IBM/sarama's consumer group with auto-commit, its defaults
// except the start (oldest) and the commit interval (as for the others).
func runSarama(ctx context.Context, env *Env) (Outcome, error) {
	cfg := sarama.NewConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = true
	cfg.Consumer.Offsets.AutoCommit.Interval = commitInterval
	cfg.Net.Proxy.Enable = true // the only way to hand sarama a dialer
	cfg.Net.Proxy.Dialer = env.Wire
	g, err := sarama.NewConsumerGroup(env.Brokers, env.Group, cfg)
	if err != nil {
		return Outcome{OwnCommits: -1}, err
	}
	ctx, stop := stopWhenComplete(ctx, env.Check)
	defer stop()
	var consumeErr error
	for ctx.Err() == nil {
		// Consume returns at every rebalance; loop to rejoin.
		if err := g.Consume(ctx, []string{env.Topic}, saramaHandler{env.Check}); err != nil {
			if ctx.Err() == nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
				consumeErr = err
			}
			break
		}
	}
	// Close commits the marked offsets and leaves the group.
	return Outcome{OwnCommits: -1}, errors.Join(consumeErr, g.Close())
}

type saramaHandler struct{ chk *Checker }

func (saramaHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (saramaHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h saramaHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.chk.MarkOne(m.Partition, m.Offset, len(m.Key)+len(m.Value))
			sess.MarkMessage(m, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}
