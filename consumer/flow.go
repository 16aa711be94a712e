package consumer

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/offsets"
)

// flow is the member's flow control, the one owner of the memory bound: it
// counts the records and bytes fetched and not yet handled (member-wide and
// per partition), tells the poll loop how many records there is room for,
// closes open batches when the buffer is full, pauses the partitions over
// their share when handlers are slow, and sizes the client's fetches so that
// what the client holds stays within a share of the byte bound too.
//
// Who calls what: the poll loop calls roomFor, polled, waitForRoom (which
// calls flushLargest and pauseOverShare), flushIdle and adjustFetch; workers
// call hold (through enqueue, on the poll loop's goroutine), setOpen,
// takeFlush and release; the rebalance bookkeeping calls add and remove.
// kgo's fetch goroutines call OnFetchBatchRead.
type flow struct {
	cl    *kgo.Client
	stats *counters

	maxRecs, maxBytes int64 // MaxBufferedRecords, MaxBufferedBytes
	batchRecs         int   // Batch.MaxRecords
	batchBytes        int   // Batch.MaxBytes, 0 when off

	// Member-wide counts: written by hold (poll loop) and release
	// (workers), read by anyone.
	buffered, bufferedBytes atomic.Int64
	lastAvgSize             atomic.Int64  // average record size of the last poll; poll loop
	room                    chan struct{} // capacity 1: records were released

	// Fetch sizing: the compression ratio seen, from kgo's fetch hook.
	wireBytes, plainBytes atomic.Int64 // since the last adjustFetch
	ratio                 float64      // poll loop only
	lastAdjust            time.Time    // poll loop only
	fetchBytes            atomic.Int32 // current FetchMaxBytes; written by the poll loop
	fixed                 bool         // FetchMaxBytes set by the user: left alone; written by New

	mu    sync.Mutex // guards parts and the flowPart fields marked "under flow.mu"
	parts map[offsets.Partition]*flowPart
}

// flowPart is one owned partition's share of the buffer.
type flowPart struct {
	tp        offsets.Partition
	held      atomic.Int64 // records fetched and not yet released; written under flow.mu
	heldBytes int          // under flow.mu
	paused    bool         // its fetching is paused; under flow.mu
	gone      bool         // removed: never paused or resumed again; under flow.mu

	// The worker's open batch (records added, not yet flushed): written by
	// the worker, read by the poll loop to pick what to flush.
	open, openBytes atomic.Int64
	// flushReq asks the worker to close its open batch: 0 for no, else
	// 1 + the FlushReason (FlushBuffer or FlushIdle). Set by the poll loop,
	// cleared by the worker.
	flushReq atomic.Uint32
	wake     func() // wakes the worker
	// backlog is what the polls showed of the partition: backlogUnknown
	// before the first, backlogBehind when the last left records past the
	// last one it brought, backlogCaughtUp when it reached the high
	// watermark. Poll loop only.
	backlog int
}

const (
	backlogUnknown = iota
	backlogBehind
	backlogCaughtUp
)

const (
	// pauseAfter is how long the poll loop waits for room, after asking for
	// open batches to be closed, before it pauses the partitions holding
	// more than their share.
	pauseAfter = 50 * time.Millisecond
	// fetchShare is the part of MaxBufferedBytes the client's buffered
	// fetches take, decompressed: 1/fetchShare, or up to 1/manyFetchShare
	// when the member owns many partitions (partFetchBytes each).
	fetchShare     = 4
	manyFetchShare = 2
	// partFetchBytes is what a fetch should bring of each owned partition
	// once the member owns so many that a quarter of the bound would bring
	// less (above 512 partitions with the default 64 MiB): each fetch costs
	// the broker a pass over every partition of the fetch session, so at
	// 1024 partitions on Kafka 4.3.1, 16 MiB fetches made kbatch 0.68x the
	// raw loop and 32 MiB fetches 0.83-0.87x (8M records of 100 B).
	partFetchBytes = 32 << 10
	// minFetchBytes and maxFetchBytes clamp the fetch size kbatch asks for
	// (kgo's default FetchMaxBytes is 50 MiB). A fetch still returns a
	// record batch larger than it, so progress never depends on it.
	minFetchBytes = 64 << 10
	maxFetchBytes = 50 << 20
	// maxPartFetchBytes is kgo's default FetchMaxPartitionBytes.
	maxPartFetchBytes = 1 << 20
	// adjustEvery is how often the fetch size may change.
	adjustEvery = 100 * time.Millisecond
)

func newFlow(cfg Config, stats *counters) *flow {
	f := &flow{
		stats:     stats,
		maxRecs:   int64(cfg.MaxBufferedRecords),
		maxBytes:  int64(cfg.MaxBufferedBytes),
		batchRecs: cfg.Batch.MaxRecords,
		room:      make(chan struct{}, 1),
		ratio:     1,
		parts:     make(map[offsets.Partition]*flowPart),
	}
	if cfg.Batch.MaxBytes > 0 {
		f.batchBytes = cfg.Batch.MaxBytes
	}
	// Until a fetch showed the compression ratio, ask for little: a first
	// fetch of compressible records could decompress to many times its
	// size. adjustFetch raises it as soon as the ratio is known.
	f.fetchBytes.Store(min(f.fetchTarget(1, 1, 0), minFetchBytes))
	return f
}

// clientOpts are the fetch limits the client starts with, and the hook that
// measures the compression ratio. They go before ClientOpts: a user's
// explicit FetchMaxBytes wins until the first adjustment.
func (f *flow) clientOpts() []kgo.Opt {
	fb := f.fetchBytes.Load()
	return []kgo.Opt{
		kgo.FetchMaxBytes(fb),
		kgo.FetchMaxPartitionBytes(f.partBytes()),
		kgo.WithHooks(f),
	}
}

// partBytes is the FetchMaxPartitionBytes kbatch gives the client, from
// the first fetch on and unchanged when adjustFetch moves FetchMaxBytes:
// half the bound, within kgo's default of 1 MiB. A fetch session sends a
// partition's share to the broker again only when the partition's fetch
// offset moves, and the broker returns a batch larger than a partition's
// share only for the first partition of a fetch: with a share below the
// producers' batch size, every fetch of a backlog brought one partition (8
// partitions on kfake: 317 fetches of at most 1 MiB against the raw poll
// loop's 123, when the share started at the first fetch's 64 KiB), and a
// share lowered later would do the same to the partitions that were idle
// when it changed. FetchMaxBytes bounds what a fetch brings in all, so a
// share above it costs no memory. New sets it after making the client,
// which clamps it to FetchMaxBytes.
func (f *flow) partBytes() int32 {
	return int32(min(max(f.maxBytes/manyFetchShare, minFetchBytes), maxPartFetchBytes))
}

// OnFetchBatchRead implements kgo.HookFetchBatchRead: it counts the bytes
// read on the wire and the bytes they decompressed to.
func (f *flow) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	f.wireBytes.Add(int64(m.CompressedBytes))
	f.plainBytes.Add(int64(m.UncompressedBytes))
}

// fetchTarget is the FetchMaxBytes that keeps what the client buffers (one
// fetch per broker, decompressed) within MaxBufferedBytes/fetchShare, or
// within partFetchBytes per owned partition up to
// MaxBufferedBytes/manyFetchShare when that is more.
func (f *flow) fetchTarget(ratio float64, brokers, partitions int) int32 {
	total := float64(f.maxBytes) / fetchShare
	if many := float64(partitions) * partFetchBytes; many > total {
		total = min(many, float64(f.maxBytes)/manyFetchShare)
	}
	budget := total / float64(max(brokers, 1)) / max(ratio, 1)
	return int32(min(max(budget, minFetchBytes), maxFetchBytes))
}

// owned is the number of partitions the member owns now.
func (f *flow) owned() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.parts)
}

// adjustFetch re-sizes the client's fetches from the compression ratio seen
// since the last call, at most every adjustEvery and only once a fetch was
// read. Poll loop only.
func (f *flow) adjustFetch(now time.Time) {
	if now.Sub(f.lastAdjust) < adjustEvery || f.wireBytes.Load() == 0 {
		return
	}
	f.lastAdjust = now
	wire, plain := f.wireBytes.Swap(0), f.plainBytes.Swap(0)
	if wire > 0 {
		// Smooth over a few seconds, but follow a rise at once: a
		// compressible stream must not overshoot the bound for long.
		r := float64(plain) / float64(wire)
		if r > f.ratio {
			f.ratio = r
		} else {
			f.ratio = 0.7*f.ratio + 0.3*r
		}
	}
	target := f.fetchTarget(f.ratio, len(f.cl.DiscoveredBrokers()), f.owned())
	cur := f.fetchBytes.Load()
	if diff := target - cur; diff > cur/10 || -diff > cur/10 {
		f.fetchBytes.Store(target)
		f.cl.UpdateFetchMaxBytes(target, f.partBytes())
	}
}

// add registers a newly owned partition; wake wakes its worker.
func (f *flow) add(tp offsets.Partition, wake func()) *flowPart {
	p := &flowPart{tp: tp, wake: wake}
	f.mu.Lock()
	f.parts[tp] = p
	f.mu.Unlock()
	return p
}

// remove unregisters a partition given up (revoked, lost, fenced, closing):
// it is no longer picked for flushes, paused or resumed by flow control. The
// records it still holds are released by its worker.
func (f *flow) remove(p *flowPart) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p.gone = true
	if f.parts[p.tp] == p {
		delete(f.parts, p.tp)
	}
}

// roomFor is how many records the poll loop may ask for now: what is left of
// the record bound, cut to what the byte bound has room for at the average
// record size seen.
func (f *flow) roomFor() int64 {
	room := f.maxRecs - f.buffered.Load()
	if roomBytes := f.maxBytes - f.bufferedBytes.Load(); roomBytes <= 0 {
		return 0
	} else if avg := f.avgRecordBytes(); avg > 0 && roomBytes/avg < room {
		room = max(roomBytes/avg, 1)
	}
	return room
}

// avgRecordBytes is the average size of the records held, or of the last
// poll's records when none are held, or 0 before the first poll.
func (f *flow) avgRecordBytes() int64 {
	n := f.buffered.Load()
	if n <= 0 {
		return f.lastAvgSize.Load()
	}
	return max(f.bufferedBytes.Load()/n, 1)
}

// polled records the average record size of a poll.
func (f *flow) polled(recs, bytes int64) {
	if recs > 0 {
		f.lastAvgSize.Store(max(bytes/recs, 1))
	}
}

// hold counts n records of size bytes handed to p's worker.
func (f *flow) hold(p *flowPart, n, bytes int) {
	f.mu.Lock()
	p.held.Add(int64(n))
	p.heldBytes += bytes
	f.mu.Unlock()
	recs := f.buffered.Add(int64(n))
	b := f.bufferedBytes.Add(int64(bytes))
	raise(&f.stats.peakBufferedRecords, recs)
	raise(&f.stats.peakBufferedBytes, b)
}

// release forgets n records of size bytes that left memory (handled or
// dropped), resumes p's fetching once it is down to half its share, and
// wakes the poll loop if it waits for room.
func (f *flow) release(p *flowPart, n, bytes int) {
	if n == 0 {
		return
	}
	f.mu.Lock()
	held := p.held.Add(-int64(n))
	p.heldBytes -= bytes
	if p.paused && !p.gone {
		limitRecs, limitBytes := f.partitionLimits(len(f.parts))
		if held <= int64(limitRecs/2) && p.heldBytes <= limitBytes/2 {
			p.paused = false
			f.cl.ResumeFetchPartitions(map[string][]int32{p.tp.Topic: {p.tp.Partition}})
		}
	}
	f.mu.Unlock()
	f.buffered.Add(-int64(n))
	f.bufferedBytes.Add(-int64(bytes))
	select {
	case f.room <- struct{}{}:
	default:
	}
}

// setOpen publishes the size of p's open batch. Worker only.
func (p *flowPart) setOpen(recs, bytes int) {
	p.open.Store(int64(recs))
	p.openBytes.Store(int64(bytes))
}

// takeFlush reports (and clears) a request to close the open batch, with
// its reason. Worker only.
func (p *flowPart) takeFlush() (FlushReason, bool) {
	if p.flushReq.Load() == 0 {
		return 0, false
	}
	r := p.flushReq.Swap(0)
	return FlushReason(r - 1), r != 0
}

// askFlush asks the worker to close its open batch for reason.
func (p *flowPart) askFlush(reason FlushReason) {
	p.flushReq.Store(uint32(reason) + 1)
	p.wake()
}

// polledTo records how far a poll's records of p reach: caughtUp when the
// last one is the last the broker has (its high watermark). When a
// partition that a poll left behind catches up, its open batch is closed
// (FlushCaughtUp): the backlog is over and nothing would fill the
// batch but records not produced yet, so the end of a backlog does not wait
// out MaxWait, nor hold its part of the buffer meanwhile (at many
// partitions, a backlog is fetched a few partitions at a time, so
// partitions catch up all through it). A partition kept up with, each poll
// reaching the high watermark, is never closed this way: its batches fill
// by count, bytes or MaxWait as configured. Nor is one whose first poll
// after assignment reaches its end: a trickle's first record joins a batch
// as any other, and a backlog that one poll brought whole is cut as before.
// Poll loop only.
func (p *flowPart) polledTo(caughtUp bool) {
	if !caughtUp {
		p.backlog = backlogBehind
		return
	}
	if p.backlog == backlogBehind {
		p.askFlush(FlushCaughtUp)
	}
	p.backlog = backlogCaughtUp
}

// flushIdle asks every worker with an open batch to close it: no record
// arrived for a while and MaxWait is off, so nothing else would.
func (f *flow) flushIdle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.parts {
		if p.open.Load() > 0 {
			p.askFlush(FlushIdle)
		}
	}
}

// waitForRoom is called by the poll loop when the buffer is full. Records
// waiting in open batches are what keeps it full when handlers are idle, so
// it first asks for the largest open batches to be closed (FlushBuffer): the
// flow never depends on timers, or on partitions × MaxRecords fitting in the
// buffer. If no room comes within pauseAfter, the handlers are slow: it
// pauses the partitions holding more than their share, so that when room
// comes back the others get it. Pausing is not done sooner because kgo drops
// what it fetched for a paused partition and fetches it again on resume. It
// reports false when done is closed, true when an eighth of the bounds is
// free again.
func (f *flow) waitForRoom(done <-chan struct{}) bool {
	f.flushLargest()
	t := time.NewTimer(pauseAfter)
	defer t.Stop()
	for {
		select {
		case <-f.room:
			if f.roomy() {
				return true
			}
		case <-done:
			return false
		case <-t.C:
			f.pauseOverShare()
			f.flushLargest()
			t.Reset(pauseAfter)
		}
	}
}

// roomy reports whether an eighth of both bounds is free: the poll loop,
// once the buffer was full, polls again only then, rather than once per
// batch released for a few records at a time.
func (f *flow) roomy() bool {
	return f.maxRecs-f.buffered.Load() >= max(f.maxRecs/8, 1) &&
		f.maxBytes-f.bufferedBytes.Load() >= max(f.maxBytes/8, 1)
}

// flushLargest asks the workers with the largest open batches to close them,
// until the batches asked for hold a quarter of the bound that is full (or
// all there are).
func (f *flow) flushLargest() {
	byBytes := f.bufferedBytes.Load() >= f.maxBytes
	size := func(p *flowPart) int64 {
		if byBytes {
			return p.openBytes.Load()
		}
		return p.open.Load()
	}
	f.mu.Lock()
	cands := make([]*flowPart, 0, len(f.parts))
	for _, p := range f.parts {
		if p.flushReq.Load() == 0 && p.open.Load() > 0 {
			cands = append(cands, p)
		}
	}
	f.mu.Unlock()
	if len(cands) == 0 {
		return
	}
	slices.SortFunc(cands, func(a, b *flowPart) int { return cmp.Compare(size(b), size(a)) })
	target := f.maxRecs / 4
	if byBytes {
		target = f.maxBytes / 4
	}
	var asked int64
	for _, p := range cands {
		if asked >= target {
			break
		}
		asked += size(p)
		p.askFlush(FlushBuffer)
	}
}

// pauseOverShare pauses the fetching of the partitions that hold more than
// their share of the bounds.
func (f *flow) pauseOverShare() {
	f.mu.Lock()
	defer f.mu.Unlock()
	limitRecs, limitBytes := f.partitionLimits(len(f.parts))
	var pause map[string][]int32
	for _, p := range f.parts {
		if p.paused || (p.held.Load() < int64(limitRecs) && p.heldBytes < limitBytes) {
			continue
		}
		p.paused = true
		if pause == nil {
			pause = make(map[string][]int32)
		}
		pause[p.tp.Topic] = append(pause[p.tp.Topic], p.tp.Partition)
		f.stats.pauses.Add(1)
	}
	if pause != nil {
		f.cl.PauseFetchPartitions(pause)
	}
}

// partitionLimits is each of n partitions' share of the buffer bounds, never
// less than one batch: past it, the partition's fetching is paused when
// handlers are slow.
func (f *flow) partitionLimits(n int) (recs, bytes int) {
	n = max(n, 1)
	recs = max(int(f.maxRecs)/n, f.batchRecs)
	bytes = max(int(f.maxBytes)/n, f.batchBytes, 1)
	return recs, bytes
}

// raise sets peak to v if v is higher.
func raise(peak *atomic.Int64, v int64) {
	for {
		p := peak.Load()
		if v <= p || peak.CompareAndSwap(p, v) {
			return
		}
	}
}
