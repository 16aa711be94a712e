package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/offsets"
)

// Consumer is a member of a consumer group that hands batches of records to a
// Handler, partition by partition, and commits through a windowing offset
// manager. Make one with New, start it with Run, stop it by ending Run's
// context or with Close.
//
// Goroutines: Run's own goroutine polls and routes records; one worker
// goroutine per assigned partition; one committer goroutine. kgo's group
// goroutine runs the assign, revoke and lost callbacks. Run waits for all of
// them before it returns.
//
// Lock order: the offsets manager's commit lock (held while onFenced runs),
// then Consumer.mu, then worker.mu. The manager's commit lock is never taken
// while Consumer.mu is held; its short inner lock may be.
type Consumer struct {
	cfg     Config
	handler Handler
	cl      *kgo.Client
	offsets *offsets.Manager

	deadLetters *deadLetterWriter // nil without DeadLetter

	hardCtx    context.Context // cancelled when the consumer stops hard
	hardCancel context.CancelFunc

	mu      sync.Mutex
	workers map[offsets.Partition]*worker // owned, routable partitions
	fenced  map[offsets.Partition]int64   // owned, stopped by a fenced commit -> offset to start again from (-1: unknown yet)
	nparts  atomic.Int64                  // len(workers), read by the poll loop without mu
	wg      sync.WaitGroup                // every worker goroutine ever started

	buffered      atomic.Int64 // records held across all workers
	bufferedBytes atomic.Int64
	room          chan struct{} // capacity 1: buffered went down
	lastAvgSize   atomic.Int64  // average record size of the last poll

	runOnce   sync.Once
	closeOnce sync.Once
	closing   chan struct{} // closed by Close
	runDone   chan struct{} // closed when Run returns

	stats counters
}

type counters struct {
	records, batches, handlerErrors        atomic.Int64
	assigned, revoked, lost, rebalances    atomic.Int64
	pauses                                 atomic.Int64
	skipped, deadLettered, storeErrors     atomic.Int64
	deadLetterErrors                       atomic.Int64
	peakBufferedRecords, peakBufferedBytes atomic.Int64
}

// Stats is a snapshot of a consumer's counters.
type Stats struct {
	Records       int64 // records handled successfully
	Batches       int64 // batches handled successfully
	HandlerErrors int64 // failed handler calls (each retry counts)
	Commits       int64 // commit requests sent that succeeded
	CommitErrors  int64 // failed commit requests or partitions
	Rebalances    int64 // group sessions this member joined (assign callbacks)
	// PartitionsAssigned, Revoked and Lost count partitions across sessions.
	PartitionsAssigned, PartitionsRevoked, PartitionsLost int64
	Pauses                                                int64 // times a partition's fetching was paused
	Skipped                                               int64 // records not handed out: already done (Dedupe)
	DeadLettered                                          int64 // records written to the dead-letter topic
	DeadLetterErrors                                      int64 // failed dead-letter writes (each retry counts)
	StoreErrors                                           int64 // failed dedupe store calls (each retry counts)
	BufferedRecords, BufferedBytes                        int64 // held now
	OwnedPartitions                                       int64 // partitions owned now
	PeakBufferedRecords, PeakBufferedBytes                int64 // highest held
}

// New validates cfg, fills in its defaults and makes the group client. It
// does not connect; Run does. An invalid cfg returns a *ConfigError naming
// the field (errors.Is(err, ErrInvalidConfig)).
func New(cfg Config, handler Handler) (*Consumer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if handler == nil {
		return nil, &ConfigError{Field: "handler", Reason: "a Handler is required"}
	}
	c := &Consumer{
		cfg: cfg, handler: handler,
		workers: make(map[offsets.Partition]*worker),
		fenced:  make(map[offsets.Partition]int64),
		room:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		runDone: make(chan struct{}),
	}
	c.hardCtx, c.hardCancel = context.WithCancel(context.Background())

	mgr, err := offsets.NewManager(offsets.Config{
		Policy:        cfg.Commit,
		Commit:        c.commit,
		CommitTimeout: cfg.CommitTimeout,
		OnFenced:      c.onFenced,
		Logger:        cfg.Logger,
	})
	if err != nil {
		return nil, &ConfigError{Field: "Commit", Reason: err.Error()}
	}
	c.offsets = mgr

	reset := kgo.NewOffset().AtStart()
	if cfg.Reset == ResetLatest {
		reset = kgo.NewOffset().AtEnd()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.ConsumeResetOffset(reset),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		// Java's fetch.max.wait.ms (kgo's default is 5s): a partition
		// resumed after a pause waits at most this long behind a long poll
		// already in flight. ClientOpts may override it.
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.WithLogger(kgoLogger{cfg.Logger}),
	}
	opts = append(opts, cfg.ClientOpts...)
	// kbatch owns commits and the group callbacks: these come last so that
	// ClientOpts cannot turn them off.
	opts = append(opts,
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(c.onAssigned),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
	)
	if cfg.Protocol == ProtocolConsumer {
		opts = append(opts, kgo.ServerSideBalancer())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kbatch: making the client: %w", err)
	}
	c.cl = cl
	if cfg.DeadLetter != nil {
		c.deadLetters = newDeadLetterWriter(cfg.DeadLetter, cl)
	}
	return c, nil
}

// Client returns the underlying franz-go client, for admin calls and
// metrics. Do not poll, commit or close through it.
func (c *Consumer) Client() *kgo.Client { return c.cl }

// Run consumes until ctx ends or Close is called, then drains the batches in
// flight (within DrainTimeout), commits, and leaves the group. It returns nil
// after a clean stop. Run may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	started := false
	c.runOnce.Do(func() { started = true })
	if !started {
		select {
		case <-c.closing:
			return ErrClosed
		default:
			return errors.New("kbatch: Run called twice")
		}
	}
	defer close(c.runDone)

	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	go func() {
		select {
		case <-c.closing:
			stopPolling()
		case <-pollCtx.Done():
		}
	}()

	commitCtx, stopCommitter := context.WithCancel(c.hardCtx)
	committerDone := make(chan struct{})
	go func() {
		defer close(committerDone)
		c.offsets.Run(commitCtx)
	}()

	c.poll(pollCtx)

	// Leaving the group runs onRevoked for everything we own: it drains the
	// workers and commits their watermarks. CloseAllowingRebalance because a
	// poll may still hold the rebalance lock.
	c.cl.CloseAllowingRebalance()
	stopCommitter()
	<-committerDone
	c.stopAllWorkers() // anything left (e.g. after a lost session)
	c.hardCancel()
	c.wg.Wait()
	return nil
}

// Close stops a running Run and waits for it to return; if Run was never
// called it closes the client. A second Close is harmless.
func (c *Consumer) Close() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		neverRan := false
		c.runOnce.Do(func() { neverRan = true }) // Run can no longer start
		if neverRan {
			c.cl.Close()
			c.hardCancel()
			return
		}
		<-c.runDone
	})
	return nil
}

// poll is the poll loop: it fetches at most as many records as there is room
// for, routes each partition's records to its worker, and allows the
// rebalance the poll blocked.
func (c *Consumer) poll(ctx context.Context) {
	maxRecs, maxBytes := int64(c.cfg.MaxBufferedRecords), int64(c.cfg.MaxBufferedBytes)
	for {
		room := maxRecs - c.buffered.Load()
		if roomBytes := maxBytes - c.bufferedBytes.Load(); roomBytes <= 0 {
			room = 0
		} else if avg := c.avgRecordBytes(); avg > 0 && roomBytes/avg < room {
			// Ask only for the records the byte bound has room for, as far
			// as the average size seen so far tells.
			room = max(roomBytes/avg, 1)
		}
		if room <= 0 {
			if !c.waitForRoom(ctx) {
				return
			}
			continue
		}
		fetches := c.cl.PollRecords(ctx, int(room))
		if ctx.Err() != nil || fetches.IsClientClosed() {
			c.cl.AllowRebalance()
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
				return
			}
			c.cfg.Logger.Warn("kbatch: fetch error", "topic", topic, "partition", partition, "err", err)
		})
		var polledRecs, polledBytes int64
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			bytes := 0
			for _, r := range p.Records {
				bytes += recordSize(r)
			}
			polledRecs += int64(len(p.Records))
			polledBytes += int64(bytes)
			tp := offsets.Partition{Topic: p.Topic, Partition: p.Partition}
			c.mu.Lock()
			w := c.workers[tp]
			if resume, ok := c.fenced[tp]; ok && w == nil && resume < 0 {
				c.fenced[tp] = p.Records[0].Offset // dropped below: fetch it again on restart
			}
			c.mu.Unlock()
			if w == nil {
				return // not owned (any more): left uncommitted for the owner
			}
			c.addBuffered(len(p.Records), bytes)
			if !w.enqueue(p.Records, bytes) {
				c.releaseBuffered(len(p.Records), bytes)
			}
		})
		if polledRecs > 0 {
			c.lastAvgSize.Store(max(polledBytes/polledRecs, 1))
		}
		c.cl.AllowRebalance()
	}
}

// pauseAfter is how long the poll loop waits for room before it pauses the
// partitions holding more than their share.
const pauseAfter = 50 * time.Millisecond

// waitForRoom waits until the workers released records. If that takes longer
// than pauseAfter, the workers are slow, not the fetching: it pauses the
// partitions that hold more than their share, so that when room comes back
// the other partitions get it. Pausing is not done sooner because it drops
// what kgo fetched for the partition and costs a fetch again on resume:
// pausing whenever the buffer is briefly full cut throughput twentyfold. It
// reports false when ctx ended.
func (c *Consumer) waitForRoom(ctx context.Context) bool {
	t := time.NewTimer(pauseAfter)
	defer t.Stop()
	for {
		select {
		case <-c.room:
			return true
		case <-ctx.Done():
			return false
		case <-t.C:
			limitRecs, limitBytes := c.partitionLimits()
			c.mu.Lock()
			ws := make([]*worker, 0, len(c.workers))
			for _, w := range c.workers {
				ws = append(ws, w)
			}
			c.mu.Unlock()
			for _, w := range ws {
				w.pauseIfOver(limitRecs, limitBytes)
			}
		}
	}
}

// avgRecordBytes is the average size of the records held, or of the last
// poll's records when none are held, or 0 before the first poll.
func (c *Consumer) avgRecordBytes() int64 {
	n := c.buffered.Load()
	if n <= 0 {
		return c.lastAvgSize.Load()
	}
	return max(c.bufferedBytes.Load()/n, 1)
}

func (c *Consumer) addBuffered(n, bytes int) {
	recs := c.buffered.Add(int64(n))
	b := c.bufferedBytes.Add(int64(bytes))
	for {
		peak := c.stats.peakBufferedRecords.Load()
		if recs <= peak || c.stats.peakBufferedRecords.CompareAndSwap(peak, recs) {
			break
		}
	}
	for {
		peak := c.stats.peakBufferedBytes.Load()
		if b <= peak || c.stats.peakBufferedBytes.CompareAndSwap(peak, b) {
			break
		}
	}
}

func (c *Consumer) releaseBuffered(n, bytes int) {
	c.buffered.Add(-int64(n))
	c.bufferedBytes.Add(-int64(bytes))
	select {
	case c.room <- struct{}{}:
	default:
	}
}

// partitionLimits is each partition's share of the buffer bounds, never less
// than one batch: past it, the partition's fetching is paused.
func (c *Consumer) partitionLimits() (recs, bytes int) {
	n := int(max(c.nparts.Load(), 1))
	recs = max(c.cfg.MaxBufferedRecords/n, c.cfg.Batch.MaxRecords)
	bytes = c.cfg.MaxBufferedBytes / n
	if c.cfg.Batch.MaxBytes > 0 {
		bytes = max(bytes, c.cfg.Batch.MaxBytes)
	}
	return recs, max(bytes, 1)
}

// Stats returns a snapshot of the consumer's counters.
func (c *Consumer) Stats() Stats {
	ms := c.offsets.Stats()
	return Stats{
		Records:             c.stats.records.Load(),
		Batches:             c.stats.batches.Load(),
		HandlerErrors:       c.stats.handlerErrors.Load(),
		Commits:             ms.Commits,
		CommitErrors:        ms.CommitErrors,
		Rebalances:          c.stats.rebalances.Load(),
		PartitionsAssigned:  c.stats.assigned.Load(),
		PartitionsRevoked:   c.stats.revoked.Load(),
		PartitionsLost:      c.stats.lost.Load(),
		Pauses:              c.stats.pauses.Load(),
		Skipped:             c.stats.skipped.Load(),
		DeadLettered:        c.stats.deadLettered.Load(),
		DeadLetterErrors:    c.stats.deadLetterErrors.Load(),
		StoreErrors:         c.stats.storeErrors.Load(),
		BufferedRecords:     c.buffered.Load(),
		OwnedPartitions:     c.nparts.Load(),
		BufferedBytes:       c.bufferedBytes.Load(),
		PeakBufferedRecords: c.stats.peakBufferedRecords.Load(),
		PeakBufferedBytes:   c.stats.peakBufferedBytes.Load(),
	}
}

// Assigned returns the partitions this member owns now.
func (c *Consumer) Assigned() []offsets.Partition {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]offsets.Partition, 0, len(c.workers))
	for p := range c.workers {
		out = append(out, p)
	}
	return out
}
