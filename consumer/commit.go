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
// with the leader epochs and metadata, per-partition errors sorted into fenced
// and other. Partitions refused because their metadata is too large for the
// broker (a broker with offset.metadata.max.bytes below kbatch's 4096) are
// committed again at once without it: their completed records beyond the
// watermark are then handled again after a restart, but the commit goes.
func (c *Consumer) commit(ctx context.Context, offs map[offsets.Partition]offsets.Offset) (map[offsets.Partition]error, error) {
	start := time.Now()
	defer func() { c.hist.commit.observe(time.Since(start).Seconds()) }()
	c.commitSession.Store(c.sessions.Load())
	perr, err := c.commitOnce(ctx, offs)
	if err != nil || len(perr) == 0 {
		return perr, err
	}
	var again map[offsets.Partition]offsets.Offset
	for tp, e := range perr {
		if o := offs[tp]; o.Metadata != "" && errors.Is(e, kerr.OffsetMetadataTooLarge) {
			if again == nil {
				again = make(map[offsets.Partition]offsets.Offset)
			}
			o.Metadata = ""
			again[tp] = o
			delete(perr, tp)
		}
	}
	if again == nil {
		return perr, nil
	}
	c.cfg.Logger.Warn("kbatch: commit metadata refused as too large, committed without it", "partitions", len(again))
	perr2, err := c.commitOnce(ctx, again)
	if err != nil {
		for tp := range again {
			perr[tp] = err
		}
	}
	for tp, e := range perr2 {
		perr[tp] = e
	}
	if len(perr) == 0 {
		return nil, nil
	}
	return perr, nil
}

// commitOnce sends one OffsetCommit.
func (c *Consumer) commitOnce(ctx context.Context, offs map[offsets.Partition]offsets.Offset) (map[offsets.Partition]error, error) {
	req := make(map[string]map[int32]kgo.EpochOffset)
	var meta map[offsets.Partition]string
	for tp, o := range offs {
		m := req[tp.Topic]
		if m == nil {
			m = make(map[int32]kgo.EpochOffset)
			req[tp.Topic] = m
		}
		m[tp.Partition] = kgo.EpochOffset{Epoch: o.Epoch, Offset: o.At}
		if o.Metadata != "" {
			if meta == nil {
				meta = make(map[offsets.Partition]string)
			}
			meta[tp] = o.Metadata
		}
	}
	if meta != nil {
		// kgo's commit API takes no metadata: set it on the request kgo
		// builds, just before it is sent.
		ctx = kgo.PreCommitFnContext(ctx, func(r *kmsg.OffsetCommitRequest) error {
			for i := range r.Topics {
				t := &r.Topics[i]
				for j := range t.Partitions {
					if m, ok := meta[offsets.Partition{Topic: t.Topic, Partition: t.Partitions[j].Partition}]; ok {
						t.Partitions[j].Metadata = &m
					}
				}
			}
			return nil
		})
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
