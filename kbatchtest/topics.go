package kbatchtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
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
	return c.waitLeaders(ctx, adm, topic)
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

// waitLeaders polls the metadata until topic is there with a leader for
// every partition.
func (c *Cluster) waitLeaders(ctx context.Context, adm *kadm.Client, topic string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			td, ok := md.Topics[topic]
			switch {
			case !ok:
				err = errors.New("not in the metadata yet")
			case td.Err != nil:
				err = td.Err
			case !allLed(td):
				err = errors.New("a partition has no leader yet")
			default:
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kbatchtest: topic %s not ready: %w (last: %v)", topic, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

func allLed(td kadm.TopicDetail) bool {
	if len(td.Partitions) == 0 {
		return false
	}
	for _, p := range td.Partitions {
		if p.Err != nil || p.Leader < 0 {
			return false
		}
	}
	return true
}

// partitions returns the partition count of topic.
func (c *Cluster) partitions(ctx context.Context, topic string) (int, error) {
	adm, err := c.Admin()
	if err != nil {
		return 0, err
	}
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("kbatchtest: metadata of %s: %w", topic, err)
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil || len(td.Partitions) == 0 {
		return 0, fmt.Errorf("kbatchtest: topic %s: no partitions in the metadata (%v)", topic, td.Err)
	}
	return len(td.Partitions), nil
}
