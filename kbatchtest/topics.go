package kbatchtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CreateTopic creates topic with the given partitions and the broker's
// default replication factor, then waits until every partition has a leader
// (a real broker answers CreateTopics before its metadata shows the topic).
// A topic that already exists is not an error.
func (c *Cluster) CreateTopic(ctx context.Context, topic string, partitions int) error {
	adm, err := c.Admin()
	if err != nil {
		return err
	}
	resp, err := adm.CreateTopic(ctx, int32(partitions), -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("kbatchtest: creating topic %s: %w", topic, err)
	}
	_, err = c.WaitForTopic(ctx, topic)
	return err
}

// NewTopic creates a topic with a name unique to the test (see Name) and
// deletes it when the test ends. It fails the test if the topic cannot be
// created within 30 seconds.
func (c *Cluster) NewTopic(t testing.TB, partitions int) string {
	t.Helper()
	topic := Name(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.CreateTopic(ctx, topic, partitions); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		adm, err := c.Admin()
		if err != nil {
			return // the cluster was closed first: nothing left to delete on
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, topic)
	})
	return topic
}

// WaitForTopic polls the metadata until topic is there with a leader for
// every partition, and returns its partition count: a real broker answers
// CreateTopics before its metadata shows the topic, and a producer that
// writes at once can fail with UNKNOWN_TOPIC_OR_PARTITION. It asks a broker
// each time: kadm's Metadata answers from a cache that may be up to 5
// seconds old.
func (c *Cluster) WaitForTopic(ctx context.Context, topic string) (int, error) {
	cl, err := c.keyedClient()
	if err != nil {
		return 0, err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		n, err = leaders(ctx, cl, topic)
		if err == nil {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("kbatchtest: topic %s not ready: %w (last: %v)", topic, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// leaders returns the partition count of topic if a broker's metadata has
// it with a leader for every partition.
func leaders(ctx context.Context, cl *kgo.Client, topic string) (int, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	for _, t := range resp.Topics {
		if t.Topic == nil || *t.Topic != topic {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return 0, err
		}
		if len(t.Partitions) == 0 {
			return 0, errors.New("no partitions yet")
		}
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return 0, fmt.Errorf("partition %d: %w", p.Partition, err)
			}
			if p.Leader < 0 {
				return 0, fmt.Errorf("partition %d has no leader yet", p.Partition)
			}
		}
		return len(t.Partitions), nil
	}
	return 0, errors.New("not in the metadata yet")
}

// partitions returns the partition count of topic, waiting until the
// metadata shows it: a real broker answers CreateTopics before that.
func (c *Cluster) partitions(ctx context.Context, topic string) (int, error) {
	return c.WaitForTopic(ctx, topic)
}
