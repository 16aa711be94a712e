package consumer_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
)

// With Resequence, Process runs on several records at once and finishes in
// any order (here the earlier records are the slower ones); the handler still
// receives the results in offset order.
func Example_resequence() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "readings"))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	producer, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("readings"))
	for i := range 6 {
		producer.ProduceSync(context.Background(), &kgo.Record{Value: fmt.Appendf(nil, "reading-%d", i)})
	}
	producer.Close()

	var out []string
	done := make(chan struct{})
	c, err := consumer.New(consumer.Config{
		Brokers: brokers, Group: "enricher", Topics: []string{"readings"},
		Ordering: consumer.Resequence, Concurrency: 6,
		Process: func(ctx context.Context, r *kgo.Record) (any, error) {
			time.Sleep(time.Duration(6-r.Offset) * 20 * time.Millisecond) // the first is the slowest
			return strings.ToUpper(string(r.Value)), nil
		},
	}, func(ctx context.Context, b *consumer.Batch) error {
		for i := range b.Records {
			v, _ := b.Result(i)
			out = append(out, v.(string))
		}
		if len(out) == 6 {
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
	fmt.Println(strings.Join(out, " "))
	// Output:
	// READING-0 READING-1 READING-2 READING-3 READING-4 READING-5
}

// With ByKey, the records of one key keep their order while different keys
// are handled at the same time.
func Example_byKey() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "payments"))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	producer, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("payments"))
	for i := range 9 {
		account := []string{"alice", "bob", "carol"}[i%3]
		producer.ProduceSync(context.Background(), &kgo.Record{Key: []byte(account), Value: fmt.Appendf(nil, "payment-%d", i)})
	}
	producer.Close()

	var mu sync.Mutex
	byAccount := map[string][]string{}
	seen := 0
	done := make(chan struct{})
	c, err := consumer.New(consumer.Config{
		Brokers: brokers, Group: "ledger", Topics: []string{"payments"},
		Ordering: consumer.ByKey, Concurrency: 3,
	}, func(ctx context.Context, b *consumer.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range b.Records { // one key per batch, in offset order
			byAccount[string(r.Key)] = append(byAccount[string(r.Key)], string(r.Value))
		}
		if seen += len(b.Records); seen == 9 {
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
	for _, a := range []string{"alice", "bob", "carol"} {
		fmt.Println(a, byAccount[a])
	}
	// Output:
	// alice [payment-0 payment-3 payment-6]
	// bob [payment-1 payment-4 payment-7]
	// carol [payment-2 payment-5 payment-8]
}
