package consumer_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
)

// A consumer hands the handler batches of one partition in offset order and
// commits when it stops.
func Example() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	producer, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("orders"))
	for i := range 7 {
		producer.ProduceSync(context.Background(), &kgo.Record{Value: fmt.Appendf(nil, "order-%d", i)})
	}
	producer.Close()

	done := make(chan struct{})
	seen := 0
	c, err := consumer.New(consumer.Config{
		Brokers: brokers,
		Group:   "orders-etl",
		Topics:  []string{"orders"},
		Batch:   batcher.Policy{MaxRecords: 3, MaxWait: 50 * time.Millisecond},
	}, func(ctx context.Context, b *consumer.Batch) error {
		fmt.Printf("%s/%d offsets %d-%d (%s)\n", b.Topic, b.Partition, b.FirstOffset(), b.LastOffset(), b.Reason)
		if seen += len(b.Records); seen == 7 {
			close(done)
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	go func() { <-done; c.Close() }()
	if err := c.Run(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println("records:", c.Stats().Records)
	// Output:
	// orders/0 offsets 0-2 (records)
	// orders/0 offsets 3-5 (records)
	// orders/0 offsets 6-6 (wait)
	// records: 7
}

// A handler's unit test with NewTestBatch: the second delivery of an order
// whose charge was marked earlier must not charge it again.
func ExampleNewTestBatch() {
	charged := map[string]int{}
	handler := func(ctx context.Context, b *consumer.Batch) error {
		for i := range b.Records {
			if !b.HasMarker(i, "charged") {
				charged[b.Key(i)]++
				if err := b.Mark(ctx, i, "charged"); err != nil {
					return err
				}
			}
		}
		return nil
	}
	recs := []*kgo.Record{{Value: []byte("order 1")}, {Value: []byte("order 2")}}
	b := consumer.NewTestBatch("orders", 0, recs, []consumer.RecordState{
		{Key: "o-1", Attempts: 2, Markers: []string{"charged"}}, // charged before a crash
		{Key: "o-2"},
	})
	if err := handler(context.Background(), b); err != nil {
		fmt.Println(err)
	}
	fmt.Println("o-1 charged", charged["o-1"], "times; o-2", charged["o-2"], "; attempts", b.Attempts(0), b.Attempts(1))
	fmt.Println("markers of o-2:", b.Markers(1))
	// Output:
	// o-1 charged 0 times; o-2 1 ; attempts 2 1
	// markers of o-2: [charged]
}
