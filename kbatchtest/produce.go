package kbatchtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Values returns a record maker for Produce: record i has key "k<i>" and
// value value(i).
func Values(value func(i int) []byte) func(i int) *kgo.Record {
	return func(i int) *kgo.Record {
		return &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: value(i)}
	}
}

// Produce writes n records to topic, record(i) for i from 0 to n-1, and
// waits until the brokers acknowledged all of them. Records go to the
// partition of their key (murmur2, as the Java client's default
// partitioner), so records of one key stay in order on one partition.
// record may set anything but the topic; its Partition is ignored.
func (c *Cluster) Produce(ctx context.Context, topic string, n int, record func(i int) *kgo.Record) error {
	cl, err := c.keyedClient()
	if err != nil {
		return err
	}
	return produce(ctx, cl, topic, n, func(i int) *kgo.Record {
		r := record(i)
		r.Topic = topic
		return r
	})
}

// ProduceEven is Produce with record i on partition i mod the topic's
// partition count, so every partition gets an equal share whatever the
// keys. It waits up to 30 seconds for the topic to show in the metadata.
func (c *Cluster) ProduceEven(ctx context.Context, topic string, n int, record func(i int) *kgo.Record) error {
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	parts, err := c.partitions(mctx, topic)
	cancel()
	if err != nil {
		return err
	}
	cl, err := c.evenClient()
	if err != nil {
		return err
	}
	return produce(ctx, cl, topic, n, func(i int) *kgo.Record {
		r := record(i)
		r.Topic = topic
		r.Partition = int32(i % parts)
		return r
	})
}

// produce sends n records asynchronously and returns the first error once
// every one is acknowledged or failed.
func produce(ctx context.Context, cl *kgo.Client, topic string, n int, record func(i int) *kgo.Record) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for i := range n {
		wg.Add(1)
		cl.Produce(ctx, record(i), func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		return fmt.Errorf("kbatchtest: producing to %s: %w", topic, first)
	}
	return nil
}
