package consumer

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/offsets"
)

// onAssigned starts a worker per new partition. kgo calls it from its group
// goroutine, never concurrently with another callback, and (because of
// BlockRebalanceOnPoll) never while the poll loop holds polled records.
// With StartOffsets it first asks where the partitions start (start.go);
// every worker it starts carries the session's fencing token.
func (c *Consumer) onAssigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	c.stats.rebalances.Add(1)
	c.sessions.Add(1)
	token := assignToken(cl)
	restart := c.fencedToRestart(assigned)
	starts, ok := c.askStartOffsets(ctx, token, append(partitionsOf(assigned), restart...))
	if !ok {
		return // Run stops: nothing of these partitions is handled
	}
	c.starts.keep(cl, partitionsOf(assigned), starts)
	c.mu.Lock()
	for topic, parts := range assigned {
		for _, p := range parts {
			tp := offsets.Partition{Topic: topic, Partition: p}
			if old := c.workers[tp]; old != nil {
				// Cannot happen with a correct group protocol; be safe:
				// stop the old worker, Assign below resets the tracker.
				old.cancel()
				c.flow.remove(old.fp)
			}
			delete(c.fenced, tp) // assigned anew: started from its start offset like any other
			c.startWorker(tp, c.offsets.Assign(tp), token)
			c.stats.assigned.Add(1)
		}
	}
	restarted := c.restartFenced(restart, token, starts)
	owned := len(c.workers)
	c.nparts.Store(int64(owned))
	c.mu.Unlock()
	c.startAhead(ctx, cl, restarted)
	c.cfg.Logger.Info("kbatch: partitions assigned", "partitions", flatten(assigned), "owned", owned, "token", token)
}

// startWorker makes and starts the worker of tp under its offsets lease and
// fencing token. c.mu must be held.
func (c *Consumer) startWorker(tp offsets.Partition, lease offsets.Lease, token FencingToken) {
	w := newWorker(c, tp, lease)
	w.token = token
	c.workers[tp] = w
	c.live[w] = struct{}{}
	go func() {
		w.gid = goid()
		c.handlerGoroutines.Store(w.gid, w)
		w.run()
	}()
}

// forgetWorker is called by a worker that stopped: nobody waits for it any
// more.
func (c *Consumer) forgetWorker(w *worker) {
	c.handlerGoroutines.Delete(w.gid)
	c.mu.Lock()
	delete(c.live, w)
	c.mu.Unlock()
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
	c.starts.forget(tps)
	ws := c.detach(tps)
	c.drainWorkers(ws)
	// A context that is not already cancelled: on close, kgo passes the
	// client's context, which may be done; the final commit must still go.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.CommitTimeout)
	defer cancel()
	if err := c.offsets.CommitAndForget(cctx, tps...); err != nil {
		c.cfg.Logger.Error("kbatch: commit on revoke failed", "partitions", flatten(revoked), "err", err)
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
	c.starts.forget(tps)
	ws := c.detach(tps)
	for _, w := range ws {
		w.cancel()
	}
	if !c.waitWorkers(ws, c.cfg.DrainTimeout) {
		c.abandon(ws)
	}
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
// kgo may begin that session (and call onAssigned) before the refused
// commit's answer reaches this callback: when a session began after the
// commit was sent, the partitions still owned are started again at once
// (restartFencedNow) instead of waiting for a session that may never come.
// A partition no longer owned (its commit on revoke was the one fenced) is
// left alone: it must never come back unless assigned again.
// It runs with the offsets manager's commit lock held.
func (c *Consumer) onFenced(fs []offsets.Fenced) {
	tps := make([]offsets.Partition, 0, len(fs))
	var ws []*worker
	c.mu.Lock()
	for _, f := range fs {
		w := c.workers[f.Partition]
		if w == nil {
			continue // revoked or lost meanwhile: not ours to restart
		}
		tps = append(tps, f.Partition)
		resume := f.Resume
		if resume < 0 {
			resume = w.first.Load() // records queued, none begun yet
		}
		// Recorded and detached in one hold of c.mu, so that a session
		// starting the partition again never has its new worker detached.
		c.fenced[f.Partition] = resume
		ws = append(ws, w)
		delete(c.workers, f.Partition)
		c.flow.remove(w.fp)
	}
	c.nparts.Store(int64(len(c.workers)))
	c.mu.Unlock()
	if len(tps) == 0 {
		return
	}
	for _, w := range ws {
		w.cancel()
	}
	c.cl.PauseFetchPartitions(byTopic(tps))
	if c.sessions.Load() != c.commitSession.Load() {
		c.cfg.Logger.Warn("kbatch: commit fenced after the group's next session began, starting the partitions again", "partitions", tps)
		c.restarts.Add(1)
		go func() {
			defer c.restarts.Done()
			c.restartFencedNow(tps)
		}()
		return
	}
	c.cfg.Logger.Warn("kbatch: commit fenced, partitions stopped until the group's next session", "partitions", tps)
}

// restartFencedNow starts again, under the member's current token, the
// fenced partitions of tps that are still waiting (not revoked, lost or
// started by a session meanwhile), as onAssigned would have.
func (c *Consumer) restartFencedNow(tps []offsets.Partition) {
	token := assignToken(c.cl)
	starts, ok := c.askStartOffsets(c.hardCtx, token, tps)
	if !ok {
		return // Run stops
	}
	c.mu.Lock()
	if c.stopping.Load() {
		c.mu.Unlock()
		return
	}
	restarted := c.restartFenced(tps, token, starts)
	c.nparts.Store(int64(len(c.workers)))
	c.mu.Unlock()
	c.startAhead(c.hardCtx, c.cl, restarted)
}

// fencedToRestart lists the fenced partitions that the session assigning
// assigned leaves with this member without assigning them anew: restartFenced
// starts them again.
func (c *Consumer) fencedToRestart(assigned map[string][]int32) []offsets.Partition {
	c.mu.Lock()
	defer c.mu.Unlock()
	var tps []offsets.Partition
	for tp := range c.fenced {
		if !slices.Contains(assigned[tp.Topic], tp.Partition) {
			tps = append(tps, tp)
		}
	}
	return tps
}

// restartFenced starts again the fenced partitions listed by
// fencedToRestart, under the session's token, from the offset StartOffsets
// gave (starts) or else the lowest offset their stopped worker had not
// completed. A partition fenced since fencedToRestart waits for the next
// session (kgo rejoins after a fenced commit). It returns the offsets of
// starts it started partitions at, for startAhead (Kafka's committed offset
// is not known there: they are all taken as ahead). c.mu must be held.
func (c *Consumer) restartFenced(restart []offsets.Partition, token FencingToken, starts map[offsets.Partition]int64) map[offsets.Partition]int64 {
	var restarted map[offsets.Partition]int64
	for _, tp := range restart {
		resume, ok := c.fenced[tp]
		if !ok {
			continue // revoked or lost meanwhile
		}
		delete(c.fenced, tp)
		c.startWorker(tp, c.offsets.Assign(tp), token)
		one := map[string][]int32{tp.Topic: {tp.Partition}}
		if at, ok := starts[tp]; ok {
			resume = at
			if restarted == nil {
				restarted = make(map[offsets.Partition]int64)
			}
			restarted[tp] = at
		}
		if resume >= 0 {
			c.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{tp.Topic: {tp.Partition: {Epoch: -1, Offset: resume}}})
		}
		c.cl.ResumeFetchPartitions(one)
		c.cfg.Logger.Info("kbatch: fenced partition started again", "partition", tp.String(), "offset", resume, "token", token)
	}
	return restarted
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
			c.flow.remove(w.fp)
		}
	}
	c.nparts.Store(int64(len(c.workers)))
	return ws
}

// abandonAfter is how long a worker whose context was cancelled may take to
// stop before nobody waits for it any more.
const abandonAfter = time.Second

// leaveGrace is what leaving the group may take beyond the final drain and
// commit (the LeaveGroup request), and what closing the client may take after
// it: see leaveAndClose.
const leaveGrace = 2 * time.Second

// drainWorkers asks the workers to finish their in-flight batch and waits
// DrainTimeout; then it cancels the handlers that are still running and
// gives them abandonAfter to return before abandoning them (see abandon).
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
	c.waitWorkers(ws, abandonAfter)
	c.abandon(ws)
}

// abandon gives up waiting for the workers that have not stopped: their
// handler ignores its cancelled context. What such a handler still does is
// never committed by this member: its partition's offsets lease is gone (or
// was given to a later assignment), so its records count for nothing here
// and the next owner handles them again (at least once).
func (c *Consumer) abandon(ws []*worker) {
	for _, w := range ws {
		select {
		case <-w.done:
			continue
		default:
		}
		if w.abandoned.CompareAndSwap(false, true) {
			c.stats.abandoned.Add(1)
			c.cfg.Logger.Error("kbatch: handler ignores its cancelled context; going on without it (its batch is not committed)",
				"partition", w.tp.String())
		}
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

// liveWorkers lists the workers still running that nobody abandoned.
func (c *Consumer) liveWorkers() []*worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := make([]*worker, 0, len(c.live))
	for w := range c.live {
		if !w.abandoned.Load() {
			ws = append(ws, w)
		}
	}
	return ws
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

func partitionsOf(m map[string][]int32) []offsets.Partition {
	var out []offsets.Partition
	for t, ps := range m {
		for _, p := range ps {
			out = append(out, offsets.Partition{Topic: t, Partition: p})
		}
	}
	return out
}

// flatten summarizes partitions for a log line: per topic, the count and
// the partition numbers, the list cut after 16 so that a member owning
// thousands of partitions logs a line, not a page.
func flatten(m map[string][]int32) []string {
	topics := make([]string, 0, len(m))
	for t := range m {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	out := make([]string, 0, len(topics))
	for _, t := range topics {
		ps := slices.Clone(m[t])
		slices.Sort(ps)
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %d [", t, len(ps))
		for i, p := range ps {
			if i == 16 {
				fmt.Fprintf(&b, " ... %d more", len(ps)-i)
				break
			}
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.Itoa(int(p)))
		}
		b.WriteByte(']')
		out = append(out, b.String())
	}
	return out
}
