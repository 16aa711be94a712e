package consumer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
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
// them before it returns, except a worker whose handler ignored its
// cancelled context for longer than DrainTimeout plus a second: that one is
// abandoned (logged, counted in Stats.Abandoned) and nothing it completes is
// committed.
//
// Who owns what: flow (flow.go) the memory bound, pauses and fetch sizes;
// gate (gate.go) every dedupe store call; the rebalance callbacks
// (rebalance.go) the workers map and the fenced restarts; commit.go the
// OffsetCommit requests; retry.go the retry loop.
//
// Lock order: the offsets manager's commit lock (held while onFenced runs),
// then Consumer.mu, then worker.mu, then flow.mu. The manager's commit lock
// is never taken while Consumer.mu is held; its short inner lock may be.
type Consumer struct {
	cfg     Config
	handler Handler
	cl      *kgo.Client
	offsets *offsets.Manager
	flow    *flow
	gate    *gate

	deadLetters *deadLetterWriter // nil without DeadLetter

	hardCtx    context.Context // cancelled when the consumer stops hard
	hardCancel context.CancelFunc

	mu      sync.Mutex
	workers map[offsets.Partition]*worker // owned, routable partitions; under mu
	fenced  map[offsets.Partition]int64   // owned, stopped by a fenced commit -> offset to start again from (-1: unknown yet); under mu
	live    map[*worker]struct{}          // every worker whose goroutine has not finished; under mu
	nparts  atomic.Int64                  // len(workers), read without mu

	starts startOffsets // offsets from Config.StartOffsets until kgo fetched theirs (start.go)

	// sessions counts onAssigned calls (one per group session);
	// commitSession is its value when the last commit was sent, so that
	// onFenced knows whether the session kgo rejoined for already began
	// (rebalance.go). restarts tracks the goroutines that start fenced
	// partitions again outside a session.
	sessions      atomic.Int64
	commitSession atomic.Int64
	restarts      sync.WaitGroup

	// handlerGoroutines maps the goroutine id of each running worker to it,
	// so that Close knows when a handler calls it.
	handlerGoroutines sync.Map

	running  atomic.Bool                        // set while Run runs
	stopping atomic.Bool                        // set when the poll loop stops: drains are closes, not revokes
	fatal    atomic.Pointer[error]              // why Run stopped on its own; set once, by fail
	stopPoll atomic.Pointer[context.CancelFunc] // ends the poll loop; set by Run

	runOnce         sync.Once
	closeOnce       sync.Once
	closedBeforeRun bool          // written in closeOnce: Run never ran
	closing         chan struct{} // closed by Close
	runDone         chan struct{} // closed when Run returns

	sampler sampler // per-record and per-retry lines

	stats  counters
	hist   histograms
	topics map[string]*topicCounters // one per Config.Topics; read-only after New
}

type counters struct {
	records, batches, handlerErrors        atomic.Int64
	assigned, revoked, lost, rebalances    atomic.Int64
	pauses                                 atomic.Int64
	skipped, deadLettered, storeErrors     atomic.Int64
	storeReassigns                         atomic.Int64
	deadLetterErrors, fetchErrors          atomic.Int64
	missingTopics                          atomic.Int64
	abandoned                              atomic.Int64
	peakBufferedRecords, peakBufferedBytes atomic.Int64
	flushes                                [numFlushReasons]atomic.Int64
}

// Stats is a snapshot of a consumer's counters.
type Stats struct {
	Records       int64 // records handed to a handler that returned success for them
	Batches       int64 // successful handler calls
	HandlerErrors int64 // failed handler calls (each retry counts)
	Skipped       int64 // records not handed out: already done (Dedupe), or named done by the commit metadata (ByKey)
	DeadLettered  int64 // records written to the dead-letter topic
	// Flushes counts the batches cut, by reason: index it with a
	// FlushReason (s.Flushes[FlushBuffer]). Many FlushBuffer or FlushWait
	// flushes with few records each say the buffer or MaxWait, not
	// MaxRecords, sizes the batches.
	Flushes      [numFlushReasons]int64
	Commits      int64 // commit requests sent that succeeded
	CommitErrors int64 // failed commit requests or partitions
	Rebalances   int64 // group sessions this member joined (assign callbacks)
	// PartitionsAssigned, Revoked and Lost count partitions across sessions.
	PartitionsAssigned, PartitionsRevoked, PartitionsLost int64
	Pauses                                                int64 // times a partition's fetching was paused
	DeadLetterErrors                                      int64 // failed dead-letter writes (each retry counts)
	StoreErrors                                           int64 // failed dedupe store calls (each retry counts)
	StoreReassigns                                        int64 // times the dedupe store refused a partition and the worker claimed it again
	FetchErrors                                           int64 // errors the client reported while polling (not authorized, invalid topic, ...)
	MissingTopics                                         int64 // configured topics that did not exist at the last look-up (every 30s)
	Abandoned                                             int64 // workers given up on: their handler ignored its cancelled context
	BufferedRecords, BufferedBytes                        int64 // held now
	OwnedPartitions                                       int64 // partitions owned now
	PeakBufferedRecords, PeakBufferedBytes                int64 // highest held
	FetchMaxBytes                                         int64 // the fetch size kbatch asks the client for now
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
		live:    make(map[*worker]struct{}),
		closing: make(chan struct{}),
		runDone: make(chan struct{}),
	}
	c.hardCtx, c.hardCancel = context.WithCancel(context.Background())
	c.hist = newHistograms()
	c.topics = make(map[string]*topicCounters, len(cfg.Topics))
	for _, t := range cfg.Topics {
		c.topics[t] = &topicCounters{}
	}
	c.flow = newFlow(cfg, &c.stats)
	c.gate = newGate(cfg.Dedupe, &c.stats)

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
	// Security goes to every client kbatch makes: the member, and through
	// it (connectionOpts) the dead-letter producer; before ClientOpts.
	secOpts, err := cfg.Security.Options()
	if err != nil {
		return nil, &ConfigError{Field: "Security", Reason: err.Error()}
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		// No ConsumeTopics: kgo would join the group at once, and the
		// member would own partitions (and call StartOffsets) before Run,
		// consuming nothing however long the service took to call it. Run
		// adds the topics, which starts the group's management.
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeResetOffset(reset),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		// Java's fetch.max.wait.ms (kgo's default is 5s): a partition
		// resumed after a pause waits at most this long behind a long poll
		// already in flight. ClientOpts may override it.
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.WithLogger(kgoLogger{l: cfg.Logger, min: *cfg.ClientLogLevel}),
	}
	opts = append(opts, c.flow.clientOpts()...)
	opts = append(opts, secOpts...)
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
	if cfg.StartOffsets != nil {
		opts = append(opts, kgo.AdjustFetchOffsetsFn(c.adjustFetchOffsets))
	}
	if cfg.Protocol == ProtocolConsumer {
		opts = append(opts, kgo.ServerSideBalancer())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kbatch: making the client: %w", err)
	}
	c.cl = cl
	c.flow.cl = cl
	// A FetchMaxBytes given in ClientOpts is the user's choice: kbatch
	// then leaves the fetch size alone, and a partition's share is what
	// kgo's default would give with that FetchMaxBytes (unless ClientOpts
	// set it too). kgo clamped the share kbatch gave to the FetchMaxBytes in
	// force: a share equal to that is kbatch's, and is set again unclamped
	// (see partBytes).
	fetchOpt := reflect.ValueOf(cl.OptValue(kgo.FetchMaxBytes))
	partOpt := reflect.ValueOf(cl.OptValue(kgo.FetchMaxPartitionBytes))
	if fetchOpt.CanInt() && partOpt.CanInt() {
		fetch, part := int32(fetchOpt.Int()), int32(partOpt.Int())
		ownPart := part == min(c.flow.partBytes(), fetch)
		switch {
		case fetch != c.flow.fetchBytes.Load():
			c.flow.fixed = true
			c.flow.fetchBytes.Store(fetch)
			if ownPart {
				cl.UpdateFetchMaxBytes(fetch, min(fetch, maxPartFetchBytes))
			}
		case ownPart:
			cl.UpdateFetchMaxBytes(fetch, c.flow.partBytes())
		}
	}
	if cfg.DeadLetter != nil {
		c.deadLetters = newDeadLetterWriter(cfg.DeadLetter, cfg.Topics, cl)
	}
	return c, nil
}

// Client returns the underlying franz-go client, for admin calls and
// metrics. Do not poll, commit or close through it.
func (c *Consumer) Client() *kgo.Client { return c.cl }

// Run joins the group (not New: a member owns no partition before Run) and
// consumes until ctx ends or Close is called, then drains the batches in
// flight (within DrainTimeout), commits, and leaves the group. It returns nil
// after a clean stop, or an error when it stopped on its own because nothing
// can be consumed: authentication failed, or the group or a topic is not
// authorized (errors.Is(err, kerr.GroupAuthorizationFailed) and the like);
// it drains, commits what completed and leaves the group first. Run may be
// called once.
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
	c.running.Store(true)
	defer c.running.Store(false)

	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	c.stopPoll.Store(&stopPolling)
	go func() {
		select {
		case <-c.closing:
			stopPolling()
		case <-pollCtx.Done():
		}
	}()

	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		c.watchTopics(pollCtx, stopPolling)
	}()

	commitCtx, stopCommitter := context.WithCancel(c.hardCtx)
	committerDone := make(chan struct{})
	go func() {
		defer close(committerDone)
		c.offsets.Run(commitCtx)
	}()

	c.cl.AddConsumeTopics(c.cfg.Topics...) // joins the group
	c.poll(pollCtx)
	c.stopping.Store(true)
	stopPolling()
	<-watchDone

	c.leaveAndClose()
	if c.deadLetters != nil {
		c.deadLetters.close()
	}
	stopCommitter()
	<-committerDone
	c.stopAllWorkers() // anything left (e.g. after a lost session)
	c.hardCancel()
	c.restarts.Wait() // a restart seeing stopping set starts nothing
	ws := c.liveWorkers()
	if !c.waitWorkers(ws, abandonAfter) {
		c.abandon(ws)
	}
	if err := c.fatalErr(); err != nil {
		return err
	}
	return nil
}

// leaveAndClose leaves the group and closes the client, within a bound.
// Leaving runs onRevoked for everything the member owns: it drains the
// workers (DrainTimeout, then abandonAfter for a handler ignoring its
// context) and commits their watermarks (CommitTimeout); then kgo sends
// LeaveGroup, which it would retry for as long as a stalled coordinator stays
// silent (30s and more). The leave is given the sum of those plus leaveGrace;
// past that the member goes on without it (the group notices the
// member gone when its session times out), and what was not committed is read
// again by the partitions' next owner. Closing the client is then given
// leaveGrace too: a client that cannot close in time is left to finish in the
// background rather than hold Run.
func (c *Consumer) leaveAndClose() {
	bound := c.cfg.DrainTimeout + abandonAfter + c.cfg.CommitTimeout + leaveGrace
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	// A poll may still hold the rebalance lock.
	c.cl.AllowRebalance()
	if err := c.cl.LeaveGroupContext(ctx); err != nil && ctx.Err() != nil {
		c.cfg.Logger.Warn("kbatch: leaving the group took too long, going on without it", "after", bound, "err", err)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		c.cl.Close()
	}()
	t := time.NewTimer(leaveGrace)
	defer t.Stop()
	select {
	case <-closed:
	case <-t.C:
		c.cfg.Logger.Warn("kbatch: the client did not close in time, going on without it", "after", leaveGrace)
	}
}

// Close stops a running Run and waits for it to return; if Run was never
// called it closes the client. A second Close is harmless.
//
// Called from inside a handler (a fatal error), Close cannot wait for Run,
// which waits for that handler: it starts the stop and returns at once. The
// handler's batch is then drained like any other: if the handler returns
// within DrainTimeout its result counts and is committed.
func (c *Consumer) Close() error {
	_, fromHandler := c.handlerGoroutines.Load(goid())
	c.closeOnce.Do(func() {
		close(c.closing)
		c.runOnce.Do(func() { c.closedBeforeRun = true }) // Run can no longer start
		if c.closedBeforeRun {
			c.cl.Close()
			c.hardCancel()
		}
	})
	if c.closedBeforeRun || fromHandler {
		return nil
	}
	<-c.runDone
	return nil
}

// goid returns the calling goroutine's id, read from its stack header
// ("goroutine 42 [running]:").
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	var id uint64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			break
		}
		id = id*10 + uint64(ch-'0')
	}
	return id
}

// fail makes Run stop with err (the first one given wins): the poll loop
// ends, the batches in flight drain, what completed is committed, and Run
// returns err.
func (c *Consumer) fail(err error) {
	if c.fatal.CompareAndSwap(nil, &err) {
		c.cfg.Logger.Error("kbatch: cannot go on, stopping", "err", err)
	}
	if stop := c.stopPoll.Load(); stop != nil {
		(*stop)()
	}
}

// fatalErr is the error Run stops with, nil if none.
func (c *Consumer) fatalErr() error {
	if p := c.fatal.Load(); p != nil {
		return *p
	}
	return nil
}

// drainReason is the flush reason of a worker asked to drain.
func (c *Consumer) drainReason() FlushReason {
	if c.stopping.Load() {
		return FlushClose
	}
	return FlushRevoke
}

// poll is the poll loop: it fetches at most as many records as there is room
// for, routes each partition's records to its worker, and allows the
// rebalance the poll blocked. It returns when ctx ends or the client reports
// an error that no retry can pass (see Run).
func (c *Consumer) poll(ctx context.Context) {
	for {
		if !c.flow.fixed {
			c.flow.adjustFetch(time.Now())
		}
		room := c.flow.roomFor()
		if room <= 0 {
			if !c.flow.waitForRoom(ctx.Done()) {
				return
			}
			continue
		}
		pctx, cancel := ctx, context.CancelFunc(nil)
		if c.cfg.Batch.MaxWait == 0 && c.flow.buffered.Load() > 0 {
			// No timer closes the open batches among the records held:
			// if nothing arrives, the poll returns and they are closed.
			pctx, cancel = context.WithTimeout(ctx, IdleFlush)
		}
		fetches := c.cl.PollRecords(pctx, int(room))
		if cancel != nil {
			cancel()
		}
		if ctx.Err() != nil || fetches.IsClientClosed() {
			c.cl.AllowRebalance()
			return
		}
		if pctx.Err() != nil && fetches.NumRecords() == 0 {
			c.cl.AllowRebalance()
			c.flow.flushIdle()
			continue
		}
		fetches.EachError(c.fetchError)
		var polledRecs, polledBytes int64
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			tp := offsets.Partition{Topic: p.Topic, Partition: p.Partition}
			if len(p.Records) == 0 {
				c.mu.Lock()
				w := c.workers[tp]
				c.mu.Unlock()
				if w != nil && p.HighWatermark >= 0 {
					w.progress.hwm.Store(p.HighWatermark)
					if p.Err == nil && w.batches() {
						w.fp.polledTo(true)
					}
				}
				return
			}
			c.mu.Lock()
			w := c.workers[tp]
			if resume, ok := c.fenced[tp]; ok && w == nil && resume < 0 {
				c.fenced[tp] = p.Records[0].Offset // dropped below: fetch it again on restart
			}
			c.mu.Unlock()
			if w == nil {
				return // not owned (any more): left uncommitted for the owner
			}
			bytes := 0
			for _, r := range p.Records {
				bytes += recordSize(r)
			}
			polledRecs += int64(len(p.Records))
			polledBytes += int64(bytes)
			if w.enqueue(p.Records, bytes) {
				w.progress.fetched(p.HighWatermark, p.Records[0].Offset, p.Records[0].Timestamp)
				if w.batches() {
					w.fp.polledTo(p.Records[len(p.Records)-1].Offset+1 >= p.HighWatermark)
				}
			}
		})
		c.flow.polled(polledRecs, polledBytes)
		c.cl.AllowRebalance()
		if c.fatal.Load() != nil {
			return
		}
	}
}

// fetchError handles an error the client reported in a poll: counted, logged
// (a repeated one at most once a minute), and, if no retry can pass it, kept
// as the reason Run stops.
func (c *Consumer) fetchError(topic string, partition int32, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed) {
		return
	}
	c.stats.fetchErrors.Add(1)
	if isFatal(err) {
		what := "the group " + c.cfg.Group
		if topic != "" {
			what = "topic " + topic
		}
		c.fail(fmt.Errorf("kbatch: cannot consume %s: %w", what, err))
		return
	}
	c.sampler.log(c.cfg.Logger, slog.LevelWarn, "fetch "+topic+"\x00"+err.Error(),
		"kbatch: fetch error (see Stats.FetchErrors)", "topic", topic, "partition", partition, "err", err)
}

// Stats returns a snapshot of the consumer's counters.
func (c *Consumer) Stats() Stats {
	ms := c.offsets.Stats()
	s := Stats{
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
		StoreReassigns:      c.stats.storeReassigns.Load(),
		FetchErrors:         c.stats.fetchErrors.Load(),
		MissingTopics:       c.stats.missingTopics.Load(),
		Abandoned:           c.stats.abandoned.Load(),
		BufferedRecords:     c.flow.buffered.Load(),
		OwnedPartitions:     c.nparts.Load(),
		BufferedBytes:       c.flow.bufferedBytes.Load(),
		PeakBufferedRecords: c.stats.peakBufferedRecords.Load(),
		PeakBufferedBytes:   c.stats.peakBufferedBytes.Load(),
		FetchMaxBytes:       int64(c.flow.fetchBytes.Load()),
	}
	for i := range s.Flushes {
		s.Flushes[i] = c.stats.flushes[i].Load()
	}
	return s
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
