package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// Guards invariant 6 ("the bound never stalls the flow"): with MaxWait off
// and a buffer that holds one batch's worth of records spread over four
// partitions, no batch ever fills up by count. The consumer used to stop at
// the bound and wait for ever (200 of 1000 records handled); a full buffer
// must close the open batches instead. The records are written one per
// record batch and fetched a few at a time from every partition, so that
// the partitions stay behind (none caught up, whose batch would be closed
// for that) while open batches fill the buffer.
func TestFullBufferWithMaxWaitOffKeepsRecordsMoving(t *testing.T) {
	const n, parts = 1000, 4
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	produceEach(t, brokers, topic, n, parts, 0)
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Batch = batcher.Policy{MaxRecords: 100, MaxWait: -1}
	cfg.MaxBufferedRecords = 100
	cfg.ClientOpts = []kgo.Opt{kgo.FetchMaxBytes(16 << 10), kgo.FetchMaxPartitionBytes(2 << 10)}
	var handled atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		handled.Add(int64(len(b.Records)))
		return nil
	})
	waitUntil(t, 60*time.Second, "every record handled", func() bool { return handled.Load() >= n })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	s := m.c.Stats()
	if s.Flushes[FlushBuffer] == 0 {
		t.Fatalf("no batch was closed for a full buffer: flushes %v", s.Flushes)
	}
	if s.PeakBufferedRecords > 100 {
		t.Fatalf("peak buffered %d records, bound 100", s.PeakBufferedRecords)
	}
	t.Logf("flushes by reason %v", s.Flushes)
}

// produceEach writes n records of 100-byte values, record i to partition
// i mod parts, each in a request (and record batch) of its own, gap apart.
func produceEach(t *testing.T, brokers []string, topic string, n, parts int, gap time.Duration) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range n {
		r := &kgo.Record{Partition: int32(i % parts), Value: value100(i)}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(gap)
	}
}

// Guards invariant 6 at many partitions: 64 partitions of 1,000 records
// share a buffer of 2,000 records while a batch takes 2,000, so no batch can
// ever fill by count: only the full buffer or MaxWait can close one, however
// the broker splits its fetches. The consumer used to wait out MaxWait for
// every batch (32 rounds of 2s here); with a full buffer closing the largest
// open batches, only a partition's last records (its tail, when nothing more
// arrives) wait for MaxWait.
func TestManyPartitionsWithASmallBufferDoNotWaitForTimers(t *testing.T) {
	const n, parts = 64_000, 64
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	if err := kafkatest.ProduceN(context.Background(), brokers, topic, n, parts, value100); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Batch = batcher.Policy{MaxRecords: 2000, MaxWait: 2 * time.Second}
	cfg.MaxBufferedRecords = 2000
	l := newLedger()
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		l.add(b)
		return nil
	})
	defer func() {
		if t.Failed() {
			t.Logf("handled %d; stats %+v", l.distinct.Load(), m.c.Stats())
			t.Log(m.c.flow.debugState())
		}
	}()
	waitUntil(t, 60*time.Second, "every record handled", func() bool { return l.distinct.Load() >= n })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if lost, dups, disorder := l.check(kafkatest.EndOffsets(t, brokers, topic)); lost+dups+disorder != 0 {
		t.Fatalf("lost %d, duplicates %d, out of order %d", lost, dups, disorder)
	}
	s := m.c.Stats()
	if s.Flushes[FlushWait] > 2*parts {
		t.Fatalf("flushes by reason %v: batches waited for MaxWait instead of being closed by the full buffer", s.Flushes)
	}
	if s.Flushes[FlushRecords] != 0 || s.Flushes[FlushBytes] != 0 {
		t.Fatalf("flushes by reason %v: a batch filled, the test no longer tests the bound", s.Flushes)
	}
	if s.Flushes[FlushBuffer] == 0 {
		t.Fatalf("flushes by reason %v: no batch closed by the full buffer", s.Flushes)
	}
	if s.PeakBufferedRecords > 2000 {
		t.Fatalf("peak buffered %d records, bound 2000", s.PeakBufferedRecords)
	}
}

// Guards the choice of what a full buffer flushes: the largest open batches
// first, and only as many as free a quarter of the bound.
func TestFullBufferFlushesTheLargestOpenBatchesFirst(t *testing.T) {
	var st counters
	f := newFlow(Config{MaxBufferedRecords: 100, MaxBufferedBytes: 1 << 30, Batch: batcher.Policy{MaxRecords: 100}}, &st)
	woken := map[int32]int{}
	sizes := []int{5, 30, 1, 20, 0, 12}
	parts := make([]*flowPart, len(sizes))
	for i, n := range sizes {
		p := int32(i)
		parts[i] = f.add(offsets.Partition{Topic: "t", Partition: p}, func() { woken[p]++ })
		parts[i].setOpen(n, n*100)
	}
	f.buffered.Store(100)
	f.flushLargest()
	// A quarter of 100 is 25: the batch of 30 alone frees it.
	for i, p := range parts {
		want := i == 1
		if _, got := p.takeFlush(); got != want {
			t.Errorf("partition %d (open %d): flush asked %v, want %v", i, sizes[i], got, want)
		}
	}
	parts[1].setOpen(0, 0)
	f.flushLargest()
	// Next: 20, then 12 (32 >= 25); never the empty one.
	for i, p := range parts {
		want := i == 3 || i == 5
		if _, got := p.takeFlush(); got != want {
			t.Errorf("second round, partition %d (open %d): flush asked %v, want %v", i, sizes[i], got, want)
		}
	}
	if woken[4] != 0 {
		t.Errorf("the partition without an open batch was woken")
	}
}

// Guards item 3 of the memory bound: the client's buffered fetch is sized
// from MaxBufferedBytes and the compression ratio seen, so compressible
// records cannot make the client hold many times the bound.
func TestFetchSizeFollowsTheBoundAndTheCompressionRatio(t *testing.T) {
	var st counters
	f := newFlow(Config{MaxBufferedRecords: 5000, MaxBufferedBytes: 8 << 20, Batch: batcher.Policy{MaxRecords: 1000}}, &st)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, f.clientOpts()...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	f.cl = cl
	if got, want := f.fetchBytes.Load(), int32(minFetchBytes); got != want {
		t.Fatalf("initial fetch size %d, want the floor %d until a ratio is known", got, want)
	}
	// Uncompressed records: a quarter of the 8 MiB bound.
	f.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, kgo.FetchBatchMetrics{CompressedBytes: 1 << 20, UncompressedBytes: 1 << 20})
	f.adjustFetch(time.Now())
	if got, want := f.fetchBytes.Load(), int32(2<<20); got != want {
		t.Fatalf("fetch size %d for uncompressed records, want a quarter of the bound, %d", got, want)
	}
	// Records that decompress to 8x their wire size: followed at once.
	f.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, kgo.FetchBatchMetrics{CompressedBytes: 1 << 20, UncompressedBytes: 8 << 20})
	f.adjustFetch(time.Now().Add(time.Second))
	if got, want := f.fetchBytes.Load(), int32(256<<10); got != want {
		t.Fatalf("fetch size %d after a ratio of 8, want %d", got, want)
	}
	// The partition share does not follow it down: a fetch session would
	// keep a lowered share for the partitions idle when it changed, and
	// FetchMaxBytes already bounds the fetch.
	if got := reflect.ValueOf(cl.OptValue(kgo.FetchMaxPartitionBytes)).Int(); got != 1<<20 {
		t.Fatalf("partition share %d after the fetch size went down, want it kept at 1 MiB", got)
	}
	// Never below the floor, whatever the ratio.
	f.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, kgo.FetchBatchMetrics{CompressedBytes: 1, UncompressedBytes: 1 << 20})
	f.adjustFetch(time.Now().Add(2 * time.Second))
	if got := f.fetchBytes.Load(); got != minFetchBytes {
		t.Fatalf("fetch size %d, want the floor %d", got, minFetchBytes)
	}
}

// Guards the fetch size at many partitions: a quarter of the bound until the
// member owns so many partitions that it would bring less than
// partFetchBytes of each, then partFetchBytes a partition, never more than
// half the bound (the documented share of what the client buffers).
func TestFetchSizeGrowsWithOwnedPartitionsWithinHalfTheBound(t *testing.T) {
	var st counters
	f := newFlow(Config{MaxBufferedRecords: 100000, MaxBufferedBytes: 64 << 20, Batch: batcher.Policy{MaxRecords: 1000}}, &st)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, f.clientOpts()...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	f.cl = cl
	now := time.Now()
	owned := 0
	for _, tc := range []struct {
		partitions int
		want       int32
	}{
		{8, 16 << 20},               // a quarter of 64 MiB
		{512, 16 << 20},             // 512 x 32 KiB is the quarter
		{600, 600 * partFetchBytes}, // 32 KiB a partition
		{1024, 32 << 20},            // half the bound
		{4096, 32 << 20},            // never more
		{8, 16 << 20},               // back to a quarter when they are revoked
	} {
		for owned < tc.partitions {
			f.add(offsets.Partition{Topic: "t", Partition: int32(owned)}, func() {})
			owned++
		}
		for owned > tc.partitions {
			owned--
			f.mu.Lock()
			p := f.parts[offsets.Partition{Topic: "t", Partition: int32(owned)}]
			f.mu.Unlock()
			f.remove(p)
		}
		f.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, kgo.FetchBatchMetrics{CompressedBytes: 1 << 20, UncompressedBytes: 1 << 20})
		now = now.Add(time.Second)
		f.adjustFetch(now)
		if got := f.fetchBytes.Load(); got != tc.want {
			t.Fatalf("%d partitions owned: fetch size %d, want %d", tc.partitions, got, tc.want)
		}
	}
}

// debugState describes every partition's share, for a failing test.
func (f *flow) debugState() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := fmt.Sprintf("buffered %d/%d bytes %d, fetch %d\n", f.buffered.Load(), f.maxRecs, f.bufferedBytes.Load(), f.fetchBytes.Load())
	for tp, p := range f.parts {
		if p.held.Load() > 0 || p.paused || p.open.Load() > 0 {
			out += fmt.Sprintf("  %s held %d open %d paused %v flushReq %d\n", tp, p.held.Load(), p.open.Load(), p.paused, p.flushReq.Load())
		}
	}
	return out
}

// A FetchMaxBytes of the user's is left alone, and the partition share goes
// with it: kgo's default (1 MiB, or FetchMaxBytes when smaller), not the 64
// KiB kbatch starts its fetches with before it knows the compression ratio.
// Left at 64 KiB, a user's 50 MiB fetch brought ~2 MB a request at 1024
// partitions. A FetchMaxPartitionBytes of the user's is kept too. Without
// one, the share is kbatch's largest from the start (1 MiB for the default
// bound), above the 64 KiB first fetches (TestABacklogIsFetchedFromEveryPartitionAtOnce).
func TestUserFetchMaxBytesKeepsKgosPartitionShare(t *testing.T) {
	h := func(context.Context, *Batch) error { return nil }
	base := Config{Brokers: []string{"127.0.0.1:1"}, Group: "g", Topics: []string{"t"}, Logger: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		name        string
		opts        []kgo.Opt
		wantFetch   int32
		wantPart    int32
		wantAdjusts bool
	}{
		{"defaults", nil, minFetchBytes, 1 << 20, true},
		{"FetchMaxBytes 50 MiB", []kgo.Opt{kgo.FetchMaxBytes(50 << 20)}, 50 << 20, 1 << 20, false},
		{"FetchMaxBytes 512 KiB", []kgo.Opt{kgo.FetchMaxBytes(512 << 10)}, 512 << 10, 512 << 10, false},
		{"both", []kgo.Opt{kgo.FetchMaxBytes(50 << 20), kgo.FetchMaxPartitionBytes(4 << 20)}, 50 << 20, 4 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			cfg.ClientOpts = tc.opts
			c, err := New(cfg, h)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fetch := reflect.ValueOf(c.cl.OptValue(kgo.FetchMaxBytes)).Int()
			part := reflect.ValueOf(c.cl.OptValue(kgo.FetchMaxPartitionBytes)).Int()
			if fetch != int64(tc.wantFetch) || part != int64(tc.wantPart) {
				t.Fatalf("client fetches %d bytes, %d a partition; want %d and %d", fetch, part, tc.wantFetch, tc.wantPart)
			}
			if c.flow.fixed == tc.wantAdjusts {
				t.Fatalf("fixed = %v, want %v", c.flow.fixed, !tc.wantAdjusts)
			}
		})
	}
}

// Records that trickle in while a batch is open join it, whether or not the
// worker was woken for them: ten records 20ms apart under a MaxWait of 2s
// are one batch, closed by its deadline. A worker that closed the open
// batch at its deadline without first taking what was queued for it split
// such a trickle into two batches.
func TestTrickleJoinsTheOpenBatchUntilItsDeadline(t *testing.T) {
	const n = 10
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 1)
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Batch = batcher.Policy{MaxRecords: 1000, MaxWait: 2 * time.Second}
	batches := make(chan int, n)
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		batches <- len(b.Records)
		return nil
	})
	waitUntil(t, 30*time.Second, "the member owns the partition", func() bool { return m.c.Stats().OwnedPartitions == 1 })
	produceEach(t, brokers, topic, n, 1, 20*time.Millisecond)
	select {
	case got := <-batches:
		if got != n {
			t.Fatalf("first batch holds %d records, want all %d (they arrived within 200ms of a 2s MaxWait)", got, n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no batch")
	}
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if s := m.c.Stats(); s.Flushes[FlushWait] != 1 {
		t.Fatalf("flushes %v, want one by MaxWait", s.Flushes)
	}
}

// Guards the end of a backlog: once a partition a poll left behind catches up,
// nothing but records not produced yet could fill its open batch, so the
// batch is closed at once (FlushCaughtUp) instead of waiting out MaxWait
// (a minute here; the last 500 records used to wait for it).
func TestEndOfABacklogDoesNotWaitForMaxWait(t *testing.T) {
	const n = 2500
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 1)
	produceEach(t, brokers, topic, n, 1, 0)
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Batch = batcher.Policy{MaxRecords: 1000, MaxWait: time.Minute}
	// A few hundred records a fetch: the first polls leave the partition
	// behind, as a backlog larger than one fetch does.
	cfg.ClientOpts = []kgo.Opt{kgo.FetchMaxPartitionBytes(64 << 10)}
	var mu sync.Mutex
	var sizes []int
	var reasons []FlushReason
	var handled atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		mu.Lock()
		sizes = append(sizes, len(b.Records))
		reasons = append(reasons, b.Reason)
		mu.Unlock()
		handled.Add(int64(len(b.Records)))
		return nil
	})
	waitUntil(t, 20*time.Second, "every record handled without waiting out MaxWait", func() bool { return handled.Load() >= n })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	last := len(sizes) - 1
	if reasons[last] != FlushCaughtUp || sizes[last] != n%1000 {
		t.Fatalf("batches %v cut by %v: want the last %d records closed as caught up", sizes, reasons, n%1000)
	}
	for i := range last {
		if reasons[i] == FlushCaughtUp && sizes[i] == 0 {
			t.Fatalf("an empty batch was handed out: %v %v", sizes, reasons)
		}
	}
}

// Guards the other side of it: a partition the member keeps up with (every
// poll reaches its high watermark) is never closed as caught up, not even
// after the first poll after it was assigned; its batches fill up until
// MaxWait, as configured, rather than one batch per fetch.
func TestAPartitionKeptUpWithStillBatchesByMaxWait(t *testing.T) {
	brokers, topic, cfg := onePartition(t, 0, produce100)
	cfg.Batch = batcher.Policy{MaxRecords: 1000, MaxWait: 300 * time.Millisecond}
	var handled atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		handled.Add(int64(len(b.Records)))
		return nil
	})
	waitUntil(t, 30*time.Second, "the member owns the partition", func() bool { return m.c.Stats().OwnedPartitions == 1 })
	const n = 150
	produceEach(t, brokers, topic, n, 1, 10*time.Millisecond)
	waitUntil(t, 30*time.Second, "every record handled", func() bool { return handled.Load() >= n })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	s := m.c.Stats()
	if s.Flushes[FlushCaughtUp] > 0 {
		t.Fatalf("flushes by reason %v: a partition kept up with was closed as caught up", s.Flushes)
	}
	if s.Batches > n/5 {
		t.Fatalf("%d batches for %d records trickling in over %s (flushes %v): batches no longer wait for MaxWait", s.Batches, n, 10*time.Millisecond*n, s.Flushes)
	}
	t.Logf("%d batches, flushes by reason %v", s.Batches, s.Flushes)
}

// Guards when a poll asks for the caught-up flush: on the poll that reaches
// the high watermark after one that did not, and not again while each poll
// reaches it, nor when the first poll after the assignment reaches it.
func TestCaughtUpFlushIsAskedOnceWhenAPartitionCatchesUp(t *testing.T) {
	var st counters
	f := newFlow(Config{MaxBufferedRecords: 100, MaxBufferedBytes: 1 << 20, Batch: batcher.Policy{MaxRecords: 10}}, &st)
	p := f.add(offsets.Partition{Topic: "t", Partition: 0}, func() {})
	for i, step := range []struct {
		caughtUp, asked bool
	}{
		{true, false},  // first poll after the assignment
		{true, false},  // kept up with
		{false, false}, // behind
		{false, false},
		{true, true}, // caught up
		{true, false},
	} {
		p.polledTo(step.caughtUp)
		reason, asked := p.takeFlush()
		if asked != step.asked || (asked && reason != FlushCaughtUp) {
			t.Fatalf("poll %d (caught up %v): flush asked %v (%v), want %v", i, step.caughtUp, asked, reason, step.asked)
		}
	}
}

// Guards the partition share the client starts with: a backlog of 1 KiB
// records in 256 KiB record batches, four batches in each of 8 partitions,
// is fetched from every partition at once, a few fetches in all. The
// client used to start with a share of 64 KiB (its first fetch size) and
// raise it with the fetch size; but a fetch session tells the broker a
// partition's new share only once that partition's offset moves, and the
// broker returns a batch over a partition's share only for the first
// partition of a fetch, so each fetch brought one partition's records: two
// fetches a partition (16 here, 317 for the bench's 2M records on kfake).
func TestABacklogIsFetchedFromEveryPartitionAtOnce(t *testing.T) {
	const parts, rounds, perBatch = 8, 4, 256
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(50*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 1000)
	for range rounds {
		var rs []*kgo.Record
		for p := range parts {
			for range perBatch {
				rs = append(rs, &kgo.Record{Partition: int32(p), Value: value})
			}
		}
		if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()

	reads := &fetchReads{}
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.ClientOpts = []kgo.Opt{kgo.WithHooks(reads)}
	var handled atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		handled.Add(int64(len(b.Records)))
		return nil
	})
	const n = parts * rounds * perBatch
	waitUntil(t, 60*time.Second, "every record handled", func() bool { return handled.Load() >= n })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	// A fetch that brought records brought at least one 256 KiB batch.
	if got := reads.withRecords.Load(); got > 8 {
		t.Fatalf("the backlog took %d fetches that brought records, want a few (a fetch for every partition at once)", got)
	} else {
		t.Logf("%d fetches brought records", got)
	}
}

// fetchReads counts the Fetch responses of more than 128 KiB.
type fetchReads struct{ withRecords atomic.Int64 }

func (r *fetchReads) OnBrokerRead(_ kgo.BrokerMetadata, key int16, bytesRead int, _, _ time.Duration, err error) {
	if key == 1 && err == nil && bytesRead > 128<<10 {
		r.withRecords.Add(1)
	}
}
