package kbatchtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// EndOffsets returns the end offset (the offset the next record will get)
// of each partition of topic.
func (c *Cluster) EndOffsets(ctx context.Context, topic string) (map[int32]int64, error) {
	adm, err := c.Admin()
	if err != nil {
		return nil, err
	}
	resp, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kbatchtest: end offsets of %s: %w", topic, err)
	}
	out := map[int32]int64{}
	resp.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// Committed returns the offsets group has committed on topic, by partition.
// A partition without a commit is absent; a group that never committed
// gives an empty map.
func (c *Cluster) Committed(ctx context.Context, group, topic string) (map[int32]int64, error) {
	adm, err := c.Admin()
	if err != nil {
		return nil, err
	}
	resp, err := adm.FetchOffsetsForTopics(ctx, group, topic)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kbatchtest: offsets of group %s: %w", group, err)
	}
	out := map[int32]int64{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out, nil
}

// WaitCommitted waits until group has committed at least want[p] on every
// partition p of want (a want of 0 asks nothing of that partition), e.g. the EndOffsets taken after producing, which
// means every record was handled. It polls every 50ms until ctx ends, then
// returns an error that says which partitions fell short.
func (c *Cluster) WaitCommitted(ctx context.Context, group, topic string, want map[int32]int64) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error // why the previous poll was not enough
	for {
		got, err := c.Committed(ctx, group, topic)
		switch {
		case err == nil:
			short := shortfall(got, want)
			if short == "" {
				return nil
			}
			last = errors.New(short)
		case ctx.Err() == nil || last == nil:
			last = err // a fetch cut short by ctx says less than the poll before
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kbatchtest: group %s on %s: %w: %v", group, topic, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// shortfall describes the partitions where got is below want, or "".
func shortfall(got, want map[int32]int64) string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(want)) {
		if want[p] <= 0 {
			continue // an empty partition: nothing to commit there
		}
		if o, ok := got[p]; !ok || o < want[p] {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			if ok {
				fmt.Fprintf(&b, "partition %d committed %d of %d", p, o, want[p])
			} else {
				fmt.Fprintf(&b, "partition %d nothing committed of %d", p, want[p])
			}
		}
	}
	return b.String()
}
