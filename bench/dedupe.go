package main

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/dedupe/kafkastore"
)

// countingHandler marks every batch with the checker and does nothing else.
func countingHandler(env *Env) consumer.Handler {
	return func(_ context.Context, b *consumer.Batch) error {
		env.Check.MarkRecords(b.Partition, b.Records)
		return nil
	}
}

// runKbatchDedupeMemory is kbatch's defaults plus the memory dedupe store
// with its defaults. The records carry no Idempotency-Key header, so each
// record's key is topic/partition/offset: every key is new, as in a first
// delivery, and every batch pays one Begin and one Done.
func runKbatchDedupeMemory(ctx context.Context, env *Env) (Outcome, error) {
	store := dedupe.NewMemory(dedupe.MemoryOptions{})
	cfg := kbatchConfig(env)
	cfg.Dedupe = &consumer.Dedupe{Store: store}
	out, err := runKbatchWith(ctx, env, cfg, countingHandler(env))
	return out, errors.Join(err, store.Close())
}

// runKbatchDedupeKafka is kbatch's defaults plus the Kafka dedupe store:
// every Begin and Done is a write to the group's compacted changelog topic
// (acks=all), created for the fresh group and deleted afterwards.
func runKbatchDedupeKafka(ctx context.Context, env *Env) (Outcome, error) {
	changelog := env.Group + "." + env.Topic + ".kbatch-dedupe"
	store, err := kafkastore.New(kafkastore.Options{
		Brokers:    env.Brokers,
		Group:      env.Group,
		TopicName:  func(string) string { return changelog },
		ClientOpts: []kgo.Opt{kgo.Dialer(env.Wire.DialContext)},
	})
	if err != nil {
		return Outcome{OwnCommits: -1}, err
	}
	cfg := kbatchConfig(env)
	cfg.Dedupe = &consumer.Dedupe{Store: store}
	out, err := runKbatchWith(ctx, env, cfg, countingHandler(env))
	err = errors.Join(err, store.Close())
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = deleteTopic(dctx, env.Brokers, changelog) // the bench's litter; a failure here is not the scenario's
	return out, err
}
