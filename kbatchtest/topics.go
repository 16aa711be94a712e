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
	_, err = c.waitLeaders(ctx, adm, topic)
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

// waitLeaders polls the metadata until topic is there with a leader for
// every partition, and returns its partition count.
func (c *Cluster) waitLeaders(ctx context.Context, adm *kadm.Client, topic string) (int, error) {
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
				return len(td.Partitions), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("kbatchtest: topic %s not ready: %w (last: %v)", topic, ctx.Err(), err)
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

// partitions returns the partition count of topic, waiting until the
// metadata shows it: a real broker answers CreateTopics before that.
func (c *Cluster) partitions(ctx context.Context, topic string) (int, error) {
	adm, err := c.Admin()
	if err != nil {
		return 0, err
	}
	return c.waitLeaders(ctx, adm, topic)
}
