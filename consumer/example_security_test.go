package consumer_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/security"
)

// Connection security is given once, as Config.Security: the group member,
// its dead-letter writes and its admin calls all authenticate with it. Here
// SCRAM-SHA-512 against a broker that requires SASL; in production add TLS
// (security.TLSFiles) as well. The same security.Config goes to
// kafkastore.Options.Security when the Kafka dedupe store is used.
func Example_security() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "payments"),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "billing", "s3cret"))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	sec := security.Config{SASL: &security.SASL{
		Mechanism: security.ScramSHA512,
		User:      "billing",
		Password:  "s3cret", // e.g. security.Secret(os.Getenv("KAFKA_PASSWORD"))
	}}

	opts, _ := sec.Options()
	producer, _ := kgo.NewClient(append(opts, kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("payments"))...)
	for i := range 3 {
		producer.ProduceSync(context.Background(), &kgo.Record{Value: fmt.Appendf(nil, "payment-%d", i)})
	}
	producer.Close()

	done := make(chan struct{})
	c, err := consumer.New(consumer.Config{
		Brokers:  brokers,
		Group:    "billing",
		Topics:   []string{"payments"},
		Batch:    batcher.Policy{MaxRecords: 3, MaxWait: 50 * time.Millisecond},
		Security: sec,
	}, func(ctx context.Context, b *consumer.Batch) error {
		fmt.Printf("%s/%d offsets %d-%d\n", b.Topic, b.Partition, b.FirstOffset(), b.LastOffset())
		close(done)
		return nil
	})
	if err != nil {
		panic(err)
	}
	go func() { <-done; c.Close() }()
	if err := c.Run(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println("security:", sec)
	// Output:
	// payments/0 offsets 0-2
	// security: sasl(SCRAM-SHA-512 user=billing password=[redacted])
}
