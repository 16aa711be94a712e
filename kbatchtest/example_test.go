package kbatchtest_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/kbatchtest"
	"github.com/kbatch/kbatch/offsets"
)

// A service's handler tested end to end: produce, consume with the real
// consumer, wait until the group committed everything, then check what the
// handler did.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	k, err := kbatchtest.Start() // KAFKA_BROKERS, or an embedded cluster
	if err != nil {
		panic(err)
	}
	defer k.Close()
	topic, group := kbatchtest.UniqueName("orders"), kbatchtest.UniqueName("orders-etl")
	if err := k.CreateTopic(ctx, topic, 3); err != nil {
		panic(err)
	}
	if err := k.Produce(ctx, topic, 1000, kbatchtest.Values(func(i int) []byte {
		return fmt.Appendf(nil, `{"order":%d}`, i)
	})); err != nil {
		panic(err)
	}
	end, err := k.EndOffsets(ctx, topic)
	if err != nil {
		panic(err)
	}

	var stored atomic.Int64 // the handler's side effect
	c, err := consumer.New(consumer.Config{
		Brokers: k.Brokers(),
		Group:   group,
		Topics:  []string{topic},
		Commit:  offsets.Policy{Interval: 100 * time.Millisecond}, // commit soon, so the wait is short
	}, func(ctx context.Context, b *consumer.Batch) error {
		stored.Add(int64(len(b.Records)))
		return nil
	})
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()

	if err := k.WaitCommitted(ctx, group, topic, end); err != nil {
		panic(err)
	}
	stop()
	if err := <-done; err != nil {
		panic(err)
	}
	fmt.Println("stored", stored.Load(), "orders; every offset committed")
	// Output: stored 1000 orders; every offset committed
}
