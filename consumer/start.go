package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/offsets"
)

// FencingToken identifies one ownership of a partition by a member of the
// group: the group generation (classic protocol) or the member epoch
// (KIP-848 protocol) at which the member was given the partition. It is
// read once, when the partition is assigned, and stays the same for every
// batch of that ownership (Batch.Token), even if the group rebalances
// meanwhile and the member keeps the partition.
//
// Tokens compare as integers. Every new ownership of a partition, by
// another member or by the same member after it gave the partition up or
// lost it, carries a strictly greater token than every earlier ownership
// of that partition in the group: Kafka increments the generation on every
// rebalance, and under KIP-848 a partition moves only once its previous
// owner released it, to a member at a later group epoch. Equal tokens are
// one ownership. So a sink that stores the token with its data, in the same
// transaction, and refuses a write carrying a smaller token than the stored
// one, refuses the writes of a member that lost the partition and does not
// know it yet (a zombie), the way Kafka's own fencing refuses its commits.
//
// The order holds while the group exists. The generation and the epochs
// start again from 1 when the group is deleted (kafka-consumer-groups
// --delete, or its offsets expired after offsets.retention.minutes without
// members) or moved between protocols; a sink keyed by group then needs
// its stored tokens reset (docs/postgres.md shows how for examples/pg-sink).
type FencingToken int32

// StartOffsetsFunc is the type of Config.StartOffsets.
type StartOffsetsFunc func(ctx context.Context, token FencingToken, partitions []offsets.Partition) (map[offsets.Partition]int64, error)

// assignToken reads the fencing token of the partitions assigned now from
// cl, the client passed to the assign callback (c.cl may not be set yet):
// kgo stores the generation (or member epoch) of a session before it calls
// the assign callback of that session.
func assignToken(cl *kgo.Client) FencingToken {
	_, gen := cl.GroupMetadata()
	return FencingToken(gen)
}

// askStartOffsets calls Config.StartOffsets for the partitions assigned now,
// retrying with the Retry backoff for at most DrainTimeout, and keeps the
// offsets it returns for adjustFetchOffsets. It reports false when it kept
// failing (Run then stops with the error) or the consumer is closing; no
// worker is started then.
func (c *Consumer) askStartOffsets(ctx context.Context, token FencingToken, tps []offsets.Partition) (map[offsets.Partition]int64, bool) {
	if c.cfg.StartOffsets == nil || len(tps) == 0 {
		return nil, true
	}
	asked := make(map[offsets.Partition]bool, len(tps))
	for _, tp := range tps {
		asked[tp] = true
	}
	deadline := time.Now().Add(c.cfg.DrainTimeout)
	for attempt := 1; ; attempt++ {
		starts, err := c.cfg.StartOffsets(ctx, token, append([]offsets.Partition(nil), tps...))
		if err == nil {
			for tp := range starts {
				if !asked[tp] {
					err = fmt.Errorf("returned an offset for %s, which was not assigned", tp)
					break
				}
			}
		}
		if err == nil {
			for tp, at := range starts {
				if at < 0 {
					delete(starts, tp) // no stored offset: Kafka's committed one
				}
			}
			return starts, true
		}
		wait := backoff(c.cfg.Retry, attempt)
		if ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			c.fail(fmt.Errorf("kbatch: StartOffsets for %d partition(s) (token %d) failed for %s: %w",
				len(tps), token, c.cfg.DrainTimeout, err))
			return nil, false
		}
		c.sampler.log(c.cfg.Logger, slog.LevelWarn, "start offsets", "kbatch: StartOffsets failed, assignment waits",
			"partitions", len(tps), "attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-c.closing:
			t.Stop()
			// Closing: Run is stopping anyway, and this is not why.
			c.cfg.Logger.Warn("kbatch: closing while StartOffsets fails; the partitions are not started",
				"partitions", len(tps), "err", err)
			return nil, false
		}
		t.Stop()
	}
}

// startOffsets keeps the offsets StartOffsets gave until kgo has fetched
// the committed offsets of those partitions (adjustFetchOffsets). Its zero
// value is ready; mu is a leaf lock.
type startOffsets struct {
	mu sync.Mutex
	at map[offsets.Partition]int64
	cl *kgo.Client // the client of the assign callback (Consumer.cl may not be set yet)
}

// keep records, for the partitions kgo is about to fetch offsets for, the
// offsets StartOffsets gave (starts); a partition of tps it left out starts
// from Kafka's committed offset, whatever an earlier session kept for it.
func (s *startOffsets) keep(cl *kgo.Client, tps []offsets.Partition, starts map[offsets.Partition]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = make(map[offsets.Partition]int64)
	}
	s.cl = cl
	for _, tp := range tps {
		if at, ok := starts[tp]; ok {
			s.at[tp] = at
		} else {
			delete(s.at, tp)
		}
	}
}

// forget drops the offsets kept for partitions revoked or lost before kgo
// fetched theirs.
func (s *startOffsets) forget(tps []offsets.Partition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tp := range tps {
		delete(s.at, tp)
	}
}

// adjustFetchOffsets is kgo's AdjustFetchOffsetsFn when StartOffsets is set:
// after kgo fetched the committed offsets of the partitions just assigned,
// and before it fetches records, the offsets StartOffsets gave replace them.
// Those ahead of Kafka's committed offset are handed to the offsets manager
// (startAhead).
func (c *Consumer) adjustFetchOffsets(ctx context.Context, fetched map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	s := &c.starts
	s.mu.Lock()
	var ahead map[offsets.Partition]int64
	for topic, parts := range fetched {
		for p, committed := range parts {
			tp := offsets.Partition{Topic: topic, Partition: p}
			at, ok := s.at[tp]
			if !ok {
				continue
			}
			parts[p] = kgo.NewOffset().At(at) // epoch -1: no truncation check against the committed epoch
			delete(s.at, tp)
			// Without a commit kgo gives its reset offset, which is
			// negative (or relative to the log's start or end).
			if eo := committed.EpochOffset(); at > eo.Offset {
				if ahead == nil {
					ahead = make(map[offsets.Partition]int64)
				}
				ahead[tp] = at
			}
		}
	}
	cl := s.cl
	s.mu.Unlock()
	c.startAhead(ctx, cl, ahead)
	return fetched, nil
}

// startAhead hands the offsets manager the start offsets given by
// StartOffsets that are ahead of Kafka's committed offset and inside the
// log, so that the Kafka commit, which lag tools read, reaches where the sink
// says a partition is even when no record follows (a partition the previous
// owner finished, its last Kafka commit refused or lost). A start beyond
// the log's end is left alone: kgo resets it, and records say the rest. A
// failure to read the log's end is logged: the commit then waits for records.
func (c *Consumer) startAhead(ctx context.Context, cl *kgo.Client, ahead map[offsets.Partition]int64) {
	if len(ahead) == 0 || cl == nil {
		return
	}
	topics := make([]string, 0, len(ahead))
	for tp := range ahead {
		if !slices.Contains(topics, tp.Topic) {
			topics = append(topics, tp.Topic)
		}
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.DrainTimeout)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(lctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		c.cfg.Logger.Warn("kbatch: listing end offsets for the start commit failed; Kafka's commit follows the records",
			"partitions", len(ahead), "err", err)
		return
	}
	c.mu.Lock()
	leases := make(map[offsets.Partition]offsets.Lease, len(ahead))
	for tp := range ahead {
		if w := c.workers[tp]; w != nil {
			leases[tp] = w.lease
		}
	}
	c.mu.Unlock()
	for tp, at := range ahead {
		end, ok := ends.Lookup(tp.Topic, tp.Partition)
		lease, owned := leases[tp]
		if !ok || !owned || at > end.Offset {
			continue
		}
		c.offsets.StartLeased(tp, lease, at)
	}
}
