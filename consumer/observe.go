package consumer

import (
	"math"
	"sort"
	"sync/atomic"
	"time"
)

func f64bits(f float64) uint64     { return math.Float64bits(f) }
func f64frombits(b uint64) float64 { return math.Float64frombits(b) }

// Histogram is a snapshot of a cumulative histogram with fixed buckets, as
// Prometheus reads one: Counts[i] is how many observations were at most
// Bounds[i]; Count and Sum cover every observation.
type Histogram struct {
	Bounds []float64
	Counts []uint64
	Count  uint64
	Sum    float64
}

// Bucket bounds of the consumer's histograms.
var (
	// DurationBuckets (seconds): handler, commit and record-age latencies.
	DurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
	// RecordBuckets: records per batch.
	RecordBuckets = []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}
	// ByteBuckets: bytes per batch.
	ByteBuckets = []float64{1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20}
)

// histogram is a lock-free histogram: one atomic add per bucket hit.
type histogram struct {
	bounds []float64
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    atomic.Uint64   // float64 bits, updated by CAS
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	h.counts[sort.SearchFloat64s(h.bounds, v)].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, f64bits(f64frombits(old)+v)) {
			return
		}
	}
}

func (h *histogram) snapshot() Histogram {
	s := Histogram{Bounds: h.bounds, Counts: make([]uint64, len(h.bounds))}
	var cum uint64
	for i := range h.counts {
		cum += h.counts[i].Load()
		if i < len(h.bounds) {
			s.Counts[i] = cum
		}
	}
	s.Count = cum
	s.Sum = f64frombits(h.sum.Load())
	return s
}

// histograms are the consumer's latency and size distributions.
type histograms struct {
	handler, commit, recordAge *histogram
	batchRecords, batchBytes   *histogram
}

func newHistograms() histograms {
	return histograms{
		handler:      newHistogram(DurationBuckets),
		commit:       newHistogram(DurationBuckets),
		recordAge:    newHistogram(DurationBuckets),
		batchRecords: newHistogram(RecordBuckets),
		batchBytes:   newHistogram(ByteBuckets),
	}
}

// Histograms is a snapshot of the consumer's distributions.
type Histograms struct {
	// HandlerSeconds: how long each handler call took (retries included,
	// each call observed).
	HandlerSeconds Histogram
	// BatchRecords and BatchBytes: the size of each batch cut.
	BatchRecords, BatchBytes Histogram
	// RecordAgeSeconds: for each batch handed to a handler, the age of its
	// oldest record (its timestamp: produce or log-append time) at that
	// moment: how far behind the data the handler works.
	RecordAgeSeconds Histogram
	// CommitSeconds: how long each OffsetCommit request took.
	CommitSeconds Histogram
}

// Histograms returns a snapshot of the consumer's histograms.
func (c *Consumer) Histograms() Histograms {
	return Histograms{
		HandlerSeconds:   c.hist.handler.snapshot(),
		BatchRecords:     c.hist.batchRecords.snapshot(),
		BatchBytes:       c.hist.batchBytes.snapshot(),
		RecordAgeSeconds: c.hist.recordAge.snapshot(),
		CommitSeconds:    c.hist.commit.snapshot(),
	}
}

// topicCounters count one topic's records by outcome.
type topicCounters struct {
	handled, skipped, deadLettered, retried atomic.Int64
}

// TopicStats counts one topic's records by outcome, across partitions and
// sessions.
type TopicStats struct {
	Topic        string
	Handled      int64 // records a handler succeeded for
	Skipped      int64 // records not handed out: their key was done
	DeadLettered int64 // records written to the dead-letter topic
	Retried      int64 // records of failed handler calls (each failed delivery counts)
}

// Topics returns the counters of every configured topic, in Config order.
func (c *Consumer) Topics() []TopicStats {
	out := make([]TopicStats, 0, len(c.cfg.Topics))
	for _, t := range c.cfg.Topics {
		tc := c.topics[t]
		out = append(out, TopicStats{Topic: t, Handled: tc.handled.Load(), Skipped: tc.skipped.Load(),
			DeadLettered: tc.deadLettered.Load(), Retried: tc.retried.Load()})
	}
	return out
}

// PartitionStats is what one owned partition's worker knows now.
type PartitionStats struct {
	Topic     string
	Partition int32
	// HighWatermark is the partition's end offset as of the last fetch, -1
	// before one.
	HighWatermark int64
	// Next is the offset of the first record not yet complete here (the
	// contiguous watermark, or the first offset fetched while nothing
	// completed), -1 before any record arrived.
	Next int64
	// LagRecords is HighWatermark - Next (0 when either is unknown): the
	// records this member has still to handle, from its own fetches, so it
	// is right across rebalances (a partition counts only on its owner).
	LagRecords int64
	// LagSeconds is the age of the oldest record fetched and not yet
	// complete (0 when none waits).
	LagSeconds float64
	// StalledSeconds is how long records have waited while the partition's
	// watermark did not move (0 when none waits or it moves).
	StalledSeconds float64
	// Buffered is the records held for the partition.
	Buffered int64
}

// Partitions returns a snapshot of every owned partition, sorted by topic and
// partition. A partition revoked or lost is no longer in it.
func (c *Consumer) Partitions() []PartitionStats {
	c.mu.Lock()
	ws := make([]*worker, 0, len(c.workers))
	for _, w := range c.workers {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	now := time.Now()
	out := make([]PartitionStats, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.progress.stats(w, now))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}

// progress is one worker's position, for lag and stall: written by the poll
// loop (hwm, fetched) and the worker (done, oldest, moved), read by
// Partitions.
type progress struct {
	hwm     atomic.Int64 // high watermark of the last fetch, -1 before
	next    atomic.Int64 // first offset not complete, -1 before any record
	oldest  atomic.Int64 // unix nanos of the oldest record held and not complete, 0 when none
	movedAt atomic.Int64 // unix nanos of the last completion, or of records arriving at an idle worker
}

func (p *progress) init() {
	p.hwm.Store(-1)
	p.next.Store(-1)
}

// fetched records a fetch for the partition: its high watermark, and the
// records that arrived (first is the first's offset, ts its timestamp). When
// they arrive at a partition that held nothing, the stall clock starts now.
// Poll loop.
func (p *progress) fetched(hwm, first int64, ts time.Time) {
	p.hwm.Store(hwm)
	p.next.CompareAndSwap(-1, first)
	if p.oldest.CompareAndSwap(0, unixNano(ts)) {
		p.movedAt.Store(time.Now().UnixNano())
	}
}

// handling records that a batch whose oldest record has timestamp ts is
// handed to the handler: it is the oldest record not complete. Worker.
func (p *progress) handling(ts time.Time) {
	p.oldest.Store(unixNano(ts))
}

// advanced records that the watermark moved to next. Worker.
func (p *progress) advanced(next int64, now time.Time) {
	p.next.Store(next)
	p.movedAt.Store(now.UnixNano())
}

// settled records, after a batch, whether records are still held: the
// oldest of them is then taken to be as old as the batch's newest record,
// which is right to within one batch. Worker.
func (p *progress) settled(held bool, newest time.Time) {
	if held {
		p.oldest.Store(unixNano(newest))
	} else {
		p.oldest.Store(0)
	}
}

// unixNano is t in unix nanoseconds, at least 1 so that 0 can mean "none".
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 1
	}
	return max(t.UnixNano(), 1)
}

func (p *progress) stats(w *worker, now time.Time) PartitionStats {
	s := PartitionStats{
		Topic: w.tp.Topic, Partition: w.tp.Partition,
		HighWatermark: p.hwm.Load(), Next: p.next.Load(),
		Buffered: w.fp.held.Load(),
	}
	if s.HighWatermark >= 0 && s.Next >= 0 && s.HighWatermark > s.Next {
		s.LagRecords = s.HighWatermark - s.Next
	}
	if s.Buffered > 0 {
		if o := p.oldest.Load(); o > 0 {
			s.LagSeconds = max(now.Sub(time.Unix(0, o)).Seconds(), 0)
		}
		if m := p.movedAt.Load(); m > 0 {
			s.StalledSeconds = max(now.Sub(time.Unix(0, m)).Seconds(), 0)
		}
	}
	return s
}
