//go:build !memchild

package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/dedupe/kafkastore"
	"github.com/kbatch/kbatch/kbatchtest"
)

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
	store, closeStore, err := openKafkaStore(ctx, env)
	if err != nil {
		return Outcome{OwnCommits: -1}, err
	}
	cfg := kbatchConfig(env)
	cfg.Dedupe = &consumer.Dedupe{Store: store}
	out, err := runKbatchWith(ctx, env, cfg, countingHandler(env))
	return out, errors.Join(err, closeStore())
}

// openKafkaStore opens a Kafka dedupe store for the scenario's fresh group
// and creates its changelog topic before the consumer starts, as a
// deployment does once (kafkastore's Prepare), so that the clock, which
// starts at the client's first fetch, does not count a topic creation that
// only a group's very first start pays; each partition's claim and load at
// Assign stay in it. closeStore closes the store and deletes the topic.
func openKafkaStore(ctx context.Context, env *Env) (_ *kafkastore.Store, closeStore func() error, _ error) {
	changelog := env.Group + "." + env.Topic + ".kbatch-dedupe"
	store, err := kafkastore.New(kafkastore.Options{
		Brokers:    env.Brokers,
		Group:      env.Group,
		TopicName:  func(string) string { return changelog },
		ClientOpts: []kgo.Opt{kgo.Dialer(env.Wire.DialContext)},
	})
	if err != nil {
		return nil, nil, err
	}
	closeStore = func() error {
		err := store.Close()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = deleteTopic(dctx, env.Brokers, changelog) // the bench's litter; a failure here is not the scenario's
		return err
	}
	if err := prepareChangelog(ctx, env.Brokers, store, env.Topic, changelog); err != nil {
		return nil, nil, errors.Join(err, closeStore())
	}
	return store, closeStore, nil
}

// prepareChangelog creates the changelog and waits until each of its
// partitions has a leader.
func prepareChangelog(ctx context.Context, brokers []string, store *kafkastore.Store, input, changelog string) error {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := store.Prepare(pctx, input); err != nil {
		return err
	}
	kc, err := kbatchtest.Connect(brokers...)
	if err != nil {
		return err
	}
	defer kc.Close()
	if _, err := kc.WaitForTopic(pctx, changelog); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}
