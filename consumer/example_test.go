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
