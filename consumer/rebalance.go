package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/offsets"
)

// onAssigned starts a worker per new partition. kgo calls it from its group
// goroutine, never concurrently with another callback, and (because of
// BlockRebalanceOnPoll) never while the poll loop holds polled records.
func (c *Consumer) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	c.stats.rebalances.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, parts := range assigned {
		for _, p := range parts {
			tp := offsets.Partition{Topic: topic, Partition: p}
			if old := c.workers[tp]; old != nil {
				// Cannot happen with a correct group protocol; be safe:
				// stop the old worker, Assign below resets the tracker.
				old.cancel()
			}
			c.offsets.Assign(tp)
			c.startWorker(tp)
			c.stats.assigned.Add(1)
		}
	}
	c.restartFenced(assigned)
	c.nparts.Store(int64(len(c.workers)))
	c.cfg.Logger.Info("kbatch: partitions assigned", "partitions", flatten(assigned), "owned", len(c.workers))
}

// startWorker makes and starts the worker of tp. c.mu must be held.
func (c *Consumer) startWorker(tp offsets.Partition) {
	w := newWorker(c, tp)
	c.workers[tp] = w
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		w.run()
	}()
}

// onRevoked stops feeding the revoked partitions, lets their in-flight batch
// finish within DrainTimeout, commits their watermarks and forgets them, all
// before the rebalance goes on. It also runs when the member leaves the group
// (on close), for every owned partition.
func (c *Consumer) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	tps := partitionsOf(revoked)
	if len(tps) == 0 {
		return
	}
	c.forgetFenced(tps)
	ws := c.detach(tps)
	c.drainWorkers(ws)
	// A context that is not already cancelled: on close, kgo passes the
	// client's context, which may be done; the final commit must still go.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.CommitTimeout)
	defer cancel()
	if err := c.offsets.CommitAndForget(cctx, tps...); err != nil {
		c.cfg.Logger.Error("kbatch: commit on revoke failed", "partitions", tps, "err", err)
	}
	c.resume(tps)
	c.stats.revoked.Add(int64(len(tps)))
	c.cfg.Logger.Info("kbatch: partitions revoked", "partitions", flatten(revoked))
}

// onLost cancels the lost partitions' handlers at once and commits nothing
// for them: another member may own them already.
func (c *Consumer) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	tps := partitionsOf(lost)
	if len(tps) == 0 {
		return
	}
	// Forget first: once it returns no commit naming these partitions is in
	// flight, and none will be sent.
	c.offsets.Forget(tps...)
	c.forgetFenced(tps)
	ws := c.detach(tps)
	for _, w := range ws {
		w.cancel()
	}
	c.waitWorkers(ws, c.cfg.DrainTimeout)
	c.resume(tps)
	c.stats.lost.Add(int64(len(tps)))
	c.cfg.Logger.Warn("kbatch: partitions lost", "partitions", flatten(lost))
}

// onFenced handles partitions whose commit was refused as fenced: the offsets
// manager already forgot them. Their workers stop as on a loss, their
// fetching is paused, and the offset to start again from is kept: kgo rejoins
// the group on such an error, and if the new session leaves the partition
// with this member, onAssigned (called for every session) starts it again
// there. If the session moves it elsewhere, onRevoked or onLost drops it.
// It runs with the offsets manager's commit lock held.
func (c *Consumer) onFenced(fs []offsets.Fenced) {
	tps := make([]offsets.Partition, len(fs))
	c.mu.Lock()
	for i, f := range fs {
		tps[i] = f.Partition
		resume := f.Resume
		if w := c.workers[f.Partition]; w != nil && resume < 0 {
			resume = w.first.Load() // records queued, none begun yet
		}
		c.fenced[f.Partition] = resume
	}
	c.mu.Unlock()
	ws := c.detach(tps)
	for _, w := range ws {
		w.cancel()
	}
	c.cl.PauseFetchPartitions(byTopic(tps))
	c.cfg.Logger.Warn("kbatch: commit fenced, partitions stopped until the group's next session", "partitions", tps)
}

// restartFenced starts again the fenced partitions the new session left with
// this member, from the lowest offset their stopped worker had not
// completed. Called by onAssigned with c.mu held.
func (c *Consumer) restartFenced(assigned map[string][]int32) {
	for tp, resume := range c.fenced {
		delete(c.fenced, tp)
		if slices.Contains(assigned[tp.Topic], tp.Partition) {
			continue // assigned anew: started from the committed offset like any other
		}
		c.offsets.Assign(tp)
		c.startWorker(tp)
		one := map[string][]int32{tp.Topic: {tp.Partition}}
		if resume >= 0 {
			c.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{tp.Topic: {tp.Partition: {Epoch: -1, Offset: resume}}})
		}
		c.cl.ResumeFetchPartitions(one)
		c.cfg.Logger.Info("kbatch: fenced partition started again", "partition", tp.String(), "offset", resume)
	}
}

// forgetFenced drops the restart of fenced partitions that were revoked or
// lost: they are someone else's now.
func (c *Consumer) forgetFenced(tps []offsets.Partition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tp := range tps {
		delete(c.fenced, tp)
	}
}

// detach removes the partitions' workers from routing, so the poll loop no
// longer feeds them, and returns them.
func (c *Consumer) detach(tps []offsets.Partition) []*worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ws []*worker
	for _, tp := range tps {
		if w := c.workers[tp]; w != nil {
			ws = append(ws, w)
			delete(c.workers, tp)
		}
	}
	c.nparts.Store(int64(len(c.workers)))
	return ws
}

// drainWorkers asks the workers to finish their in-flight batch and waits
// DrainTimeout; then it cancels the handlers that are still running.
func (c *Consumer) drainWorkers(ws []*worker) {
	for _, w := range ws {
		close(w.drain)
	}
	if c.waitWorkers(ws, c.cfg.DrainTimeout) {
		return
	}
	for _, w := range ws {
		w.cancel()
	}
	if !c.waitWorkers(ws, 5*time.Second) {
		c.cfg.Logger.Error("kbatch: handler ignores its cancelled context; going on without it")
	}
}

// waitWorkers waits for the workers to stop, at most d. It reports whether
// they all stopped.
func (c *Consumer) waitWorkers(ws []*worker, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for _, w := range ws {
		select {
		case <-w.done:
		case <-t.C:
			return false
		}
	}
	return true
}

// stopAllWorkers cancels every worker still owned (after the group was left,
// e.g. following a lost session) and forgets their partitions.
func (c *Consumer) stopAllWorkers() {
	c.mu.Lock()
	tps := make([]offsets.Partition, 0, len(c.workers))
	for tp := range c.workers {
		tps = append(tps, tp)
	}
	c.mu.Unlock()
	if len(tps) == 0 {
		return
	}
	c.offsets.Forget(tps...)
	for _, w := range c.detach(tps) {
		w.cancel()
	}
}

// resume clears the pause of the partitions: pause state is client-wide and
// survives rebalances, so a partition assigned back later would otherwise
// stay paused for ever.
func (c *Consumer) resume(tps []offsets.Partition) {
	c.cl.ResumeFetchPartitions(byTopic(tps))
}

func byTopic(tps []offsets.Partition) map[string][]int32 {
	m := make(map[string][]int32)
	for _, tp := range tps {
		m[tp.Topic] = append(m[tp.Topic], tp.Partition)
	}
	return m
}

// commit is the offsets manager's CommitFunc: one synchronous OffsetCommit
// with the leader epochs, per-partition errors sorted into fenced and other.
func (c *Consumer) commit(ctx context.Context, offs map[offsets.Partition]offsets.Offset) (map[offsets.Partition]error, error) {
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

func partitionsOf(m map[string][]int32) []offsets.Partition {
	var out []offsets.Partition
	for t, ps := range m {
		for _, p := range ps {
			out = append(out, offsets.Partition{Topic: t, Partition: p})
		}
	}
	return out
}

func flatten(m map[string][]int32) []string {
	var out []string
	for _, tp := range partitionsOf(m) {
		out = append(out, tp.String())
	}
	return out
}
