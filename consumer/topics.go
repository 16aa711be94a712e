package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// topicCheckEvery is how often Run looks up its topics.
const topicCheckEvery = 30 * time.Second

// watchTopics looks up the configured topics through metadata when Run
// starts and every topicCheckEvery, because the client only logs what it
// finds: a topic that does not exist (yet) is counted in
// Stats.MissingTopics and logged, and Run goes on (it may be created); a
// topic this member may not read, or credentials the cluster refuses, make
// Run stop with the error (stop ends the poll loop). It returns when ctx
// ends.
func (c *Consumer) watchTopics(ctx context.Context, stop func()) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.checkTopics(ctx); err != nil {
			c.fail(err)
			stop()
			return
		}
		t.Reset(topicCheckEvery)
	}
}

// checkTopics does one look-up; it returns an error only when consuming can
// never work.
func (c *Consumer) checkTopics(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CommitTimeout)
	defer cancel()
	details, err := kadm.NewClient(c.cl).ListTopics(cctx, c.cfg.Topics...)
	if err != nil {
		if isFatal(err) {
			return fmt.Errorf("kbatch: cannot look up topics %v: %w", c.cfg.Topics, err)
		}
		return nil // unreachable for now: the client retries and logs
	}
	var missing []string
	for _, topic := range c.cfg.Topics {
		td, ok := details[topic]
		switch {
		case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, topic)
		case td.Err != nil && isFatal(td.Err):
			return fmt.Errorf("kbatch: cannot consume topic %s: %w", topic, td.Err)
		}
	}
	c.stats.missingTopics.Store(int64(len(missing)))
	if len(missing) > 0 {
		c.cfg.Logger.Warn("kbatch: topics do not exist (yet); waiting for them", "topics", missing, "check_every", topicCheckEvery)
	}
	return nil
}
