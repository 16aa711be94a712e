package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/offsets"
)

// commit is the offsets manager's CommitFunc: one synchronous OffsetCommit
// with the leader epochs, per-partition errors sorted into fenced and other.
func (c *Consumer) commit(ctx context.Context, offs map[offsets.Partition]offsets.Offset) (map[offsets.Partition]error, error) {
	start := time.Now()
	defer func() { c.hist.commit.observe(time.Since(start).Seconds()) }()
	req := make(map[string]map[int32]kgo.EpochOffset)
	for tp, o := range offs {
		m := req[tp.Topic]
		if m == nil {
			m = make(map[int32]kgo.EpochOffset)
			req[tp.Topic] = m
		}
		m[tp.Partition] = kgo.EpochOffset{Epoch: o.Epoch, Offset: o.At}
	}
	var (
		reqErr error
		perr   map[offsets.Partition]error
	)
	c.cl.CommitOffsetsSync(ctx, req, func(_ *kgo.Client, sent *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			reqErr = err
			return
		}
		// OffsetCommit v10+ (Kafka 4.x) answers with topic IDs and no
		// names: name them from the request kgo sent.
		names := make(map[[16]byte]string, len(sent.Topics))
		for _, t := range sent.Topics {
			names[t.TopicID] = t.Topic
		}
		for _, t := range resp.Topics {
			topic := t.Topic
			if topic == "" {
				topic = names[t.TopicID]
			}
			if _, ok := req[topic]; !ok {
				reqErr = fmt.Errorf("commit response names a topic not in the request (id %x)", t.TopicID)
				return
			}
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					if perr == nil {
						perr = make(map[offsets.Partition]error)
					}
					if isFencing(err) {
						err = errors.Join(offsets.ErrFenced, err)
					}
					perr[offsets.Partition{Topic: topic, Partition: p.Partition}] = err
				}
			}
		}
	})
	return perr, reqErr
}

// isFencing reports whether a commit error means the member is no longer the
// owner in the group's current generation.
func isFencing(err error) bool {
	return errors.Is(err, kerr.IllegalGeneration) ||
		errors.Is(err, kerr.UnknownMemberID) ||
		errors.Is(err, kerr.FencedInstanceID) ||
		errors.Is(err, kerr.StaleMemberEpoch)
}
