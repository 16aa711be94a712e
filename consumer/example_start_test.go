package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/offsets"
)

// store stands for a database: per partition, the next offset to handle and
// the fencing token of its owner, written in the same transaction as the
// results (examples/pg-sink does it with PostgreSQL).
type store struct {
	mu    sync.Mutex
	next  map[offsets.Partition]int64
	token map[offsets.Partition]consumer.FencingToken
}

// claim raises the stored token to the new owner's and returns where the
// partition starts.
func (s *store) claim(_ context.Context, token consumer.FencingToken, tps []offsets.Partition) (map[offsets.Partition]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[offsets.Partition]int64{}
	for _, tp := range tps {
		if s.token[tp] > token {
			return nil, fmt.Errorf("%s has a newer owner", tp)
		}
		s.token[tp] = token
		if next, ok := s.next[tp]; ok {
			out[tp] = next
		}
	}
	return out, nil
}

// write is one transaction: refused under an older token.
func (s *store) write(b *consumer.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tp := offsets.Partition{Topic: b.Topic, Partition: b.Partition}
	if s.token[tp] > b.Token() {
		return errors.New("refused: a newer owner claimed the partition")
	}
	s.next[tp] = b.LastOffset() + 1 // with the batch's results, atomically
	return nil
}

// Offsets stored in the sink: StartOffsets makes a partition start where the
// sink says (offset 4 here, though Kafka has no commit for the group), and
// each batch carries the fencing token its writes are checked against.
func Example_startOffsets() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events"))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	producer, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("events"))
	for i := range 7 {
		producer.ProduceSync(context.Background(), &kgo.Record{Value: fmt.Appendf(nil, "event-%d", i)})
	}
	producer.Close()

	tp := offsets.Partition{Topic: "events", Partition: 0}
	s := &store{next: map[offsets.Partition]int64{tp: 4}, token: map[offsets.Partition]consumer.FencingToken{}}
	done := make(chan struct{})
	c, err := consumer.New(consumer.Config{
		Brokers:      brokers,
		Group:        "sink",
		Topics:       []string{"events"},
		Batch:        batcher.Policy{MaxWait: 50 * time.Millisecond},
		StartOffsets: s.claim,
	}, func(ctx context.Context, b *consumer.Batch) error {
		if err := s.write(b); err != nil {
			return err
		}
		fmt.Printf("offsets %d-%d written under token %d\n", b.FirstOffset(), b.LastOffset(), b.Token())
		if b.LastOffset() == 6 {
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
	fmt.Println("stored next offset:", s.next[tp])
	// Output:
	// offsets 4-6 written under token 1
	// stored next offset: 7
}
