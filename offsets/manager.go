package offsets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Partition names one partition of one topic.
type Partition struct {
	Topic     string
	Partition int32
}

func (p Partition) String() string { return fmt.Sprintf("%s/%d", p.Topic, p.Partition) }

// Offset is an offset to commit with the leader epoch of the record before
// it (-1 when unknown).
type Offset struct {
	At    int64
	Epoch int32
	// Metadata is the commit metadata: the offsets completed beyond At
	// (EncodeCompleted), "" when none are. Never over Config.MaxMetadata.
	Metadata string
}

// CommitFunc sends one commit of the given offsets and waits for its answer.
// It returns an error for the whole request (nothing was committed), or the
// per-partition errors (partitions absent from the map were committed). A
// per-partition error meaning the partition is no longer ours must wrap
// ErrFenced.
type CommitFunc func(ctx context.Context, offsets map[Partition]Offset) (map[Partition]error, error)

// Policy is the window of the offset manager.
type Policy struct {
	// EveryRecords commits once this many records completed since the last
	// commit. 0 disables the count trigger. Default 10000 (see the consumer).
	EveryRecords int
	// Interval commits when this much time passed since the last commit and
	// some watermark moved. 0 disables the time trigger. Default 5s.
	Interval time.Duration
}

// Validate reports the first invalid field of p.
func (p Policy) Validate() error {
	switch {
	case p.EveryRecords < 0:
		return fmt.Errorf("offsets: EveryRecords must be >= 0, got %d", p.EveryRecords)
	case p.Interval < 0:
		return fmt.Errorf("offsets: Interval must be >= 0, got %s", p.Interval)
	case p.EveryRecords == 0 && p.Interval == 0:
		return errors.New("offsets: EveryRecords and Interval are both 0: nothing would commit until revoke or close")
	}
	return nil
}

// Config configures a Manager.
type Config struct {
	Policy Policy
	// Commit sends commits. Required.
	Commit CommitFunc
	// CommitTimeout bounds each commit request. Default 10s.
	CommitTimeout time.Duration
	// OnFenced, if set, is called with the partitions whose commit was
	// refused as fenced; they are already forgotten. It runs with the commit
	// lock held: it must not call Commit, Forget or CommitAndForget.
	OnFenced func([]Fenced)
	// Logger receives commit failures. Default: discard.
	Logger *slog.Logger
	// MaxMetadata bounds the commit metadata of one partition, in bytes.
	// Default MaxMetadata (Kafka's default offset.metadata.max.bytes).
	// Completed ranges that do not fit are left out (handled again after
	// a restart), never a refused commit.
	MaxMetadata int
}

// part is the manager's state for one owned partition.
type part struct {
	tracker   *Tracker
	committed int64  // last offset committed by this member, -1 if none
	meta      string // the metadata of that commit
	lease     Lease  // the assignment this state belongs to
}

// Lease names one assignment of a partition to this member. Begin and Done
// calls made under an older lease (a worker of an earlier assignment that is
// still finishing) are refused or ignored, so they can never mark records of
// the current assignment complete.
type Lease uint64

// Fenced is a partition whose commit was refused as fenced.
type Fenced struct {
	Partition
	// Resume is the lowest offset of the partition not completed (the
	// watermark, or the first offset begun when nothing completed): an
	// owner that takes the partition up again must start there for nothing
	// to be skipped. -1 when nothing of the partition was begun.
	Resume int64
}

// Stats counts the manager's work.
type Stats struct {
	Commits          int64 // commit requests that succeeded at least in part
	CommitErrors     int64 // commit requests or partitions that failed
	Fenced           int64 // partitions forgotten because a commit was fenced
	RecordsCommitted int64 // records whose completion was covered by a commit
	// MetadataCut counts partition commits whose completed ranges beyond
	// the watermark did not all fit in MaxMetadata: the rest is handled
	// again after a restart.
	MetadataCut int64
}

// Manager is the windowing offset manager. Its methods are safe for
// concurrent use.
//
// Lock order: commitMu, then mu. commitMu is held for the whole of a commit
// (snapshot, request, result), so Forget and CommitAndForget, which take it
// too, never interleave with a commit in flight. mu guards parts and counters
// and is held only briefly, so workers completing batches never wait on the
// network.
type Manager struct {
	cfg  Config
	kick chan struct{}

	commitMu sync.Mutex

	mu          sync.Mutex
	parts       map[Partition]*part
	sinceCommit int64 // records completed since the last commit
	leases      Lease // the last lease handed out

	commits, commitErrors, fenced, recordsCommitted, metadataCut atomic.Int64
}

// NewManager returns a Manager or an error naming the invalid field.
func NewManager(cfg Config) (*Manager, error) {
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	if cfg.Commit == nil {
		return nil, errors.New("offsets: Config.Commit is required")
	}
	if cfg.CommitTimeout < 0 {
		return nil, fmt.Errorf("offsets: CommitTimeout must be >= 0, got %s", cfg.CommitTimeout)
	}
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = 10 * time.Second
	}
	if cfg.MaxMetadata < 0 {
		return nil, fmt.Errorf("offsets: MaxMetadata must be >= 0, got %d", cfg.MaxMetadata)
	}
	if cfg.MaxMetadata == 0 {
		cfg.MaxMetadata = MaxMetadata
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, kick: make(chan struct{}, 1), parts: make(map[Partition]*part)}, nil
}

// Assign starts tracking p. Assigning an owned partition again resets it.
func (m *Manager) Assign(p Partition) Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leases++
	m.parts[p] = &part{tracker: NewTracker(), committed: -1, lease: m.leases}
	return m.leases
}

// owned returns p's state if it is tracked under lease l (0: any lease).
// m.mu must be held.
func (m *Manager) owned(p Partition, l Lease) (*part, bool) {
	pt, ok := m.parts[p]
	if !ok || (l != 0 && pt.lease != l) {
		return nil, false
	}
	return pt, true
}

// Owned reports whether p is tracked.
func (m *Manager) Owned(p Partition) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.parts[p]
	return ok
}

// StartLeased tells the manager that p, under lease l, starts at at with
// everything below it done (see Tracker.Start): the next commit sends at
// unless records completed beyond it by then. It does nothing once a span of
// p was begun under l, or when p is not owned under l.
func (m *Manager) StartLeased(p Partition, l Lease, at int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pt, ok := m.owned(p, l); ok {
		pt.tracker.Start(at)
	}
}

// Begin registers the span [first, last] of p as handed out; epoch is the
// leader epoch of its last record. It fails if p is not owned.
func (m *Manager) Begin(p Partition, first, last int64, epoch int32) error {
	return m.BeginLeased(p, 0, first, last, epoch)
}

// BeginLeased is Begin under lease l: it fails if p is not owned under l.
func (m *Manager) BeginLeased(p Partition, l Lease, first, last int64, epoch int32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	pt, ok := m.owned(p, l)
	if !ok {
		return fmt.Errorf("offsets: begin on %s: partition not owned", p)
	}
	return pt.tracker.Begin(first, last, epoch)
}

// Done marks [first, last] of p complete; records is how many records that
// range held (for the EveryRecords trigger). Done on a partition no longer
// owned is ignored: its commits are someone else's now.
func (m *Manager) Done(p Partition, first, last int64, records int) error {
	_, _, err := m.DoneLeased(p, 0, first, last, records)
	return err
}

// DoneLeased is Done under lease l: ignored if p is not owned under l. It
// returns p's watermark afterwards (moved is false when nothing of p
// completed yet, or p is not owned under l).
func (m *Manager) DoneLeased(p Partition, l Lease, first, last int64, records int) (wm Offset, moved bool, err error) {
	m.mu.Lock()
	pt, ok := m.owned(p, l)
	if !ok {
		m.mu.Unlock()
		return Offset{}, false, nil
	}
	if err := pt.tracker.Done(first, last); err != nil {
		m.mu.Unlock()
		return Offset{}, false, err
	}
	at, epoch, moved := pt.tracker.Watermark()
	wm = Offset{At: at, Epoch: epoch}
	m.sinceCommit += int64(records)
	trigger := m.cfg.Policy.EveryRecords > 0 && m.sinceCommit >= int64(m.cfg.Policy.EveryRecords)
	m.mu.Unlock()
	if trigger {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
	return wm, moved, nil
}

// Watermark returns p's contiguous watermark; ok is false when p is not owned
// or nothing of it completed yet.
func (m *Manager) Watermark(p Partition) (Offset, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pt, ok := m.parts[p]
	if !ok {
		return Offset{}, false
	}
	at, epoch, moved := pt.tracker.Watermark()
	return Offset{At: at, Epoch: epoch}, moved
}

// Forget stops tracking the partitions without committing them (a loss).
// When it returns, no commit naming them is in flight and none will be sent.
func (m *Manager) Forget(ps ...Partition) {
	m.commitMu.Lock()
	defer m.commitMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		delete(m.parts, p)
	}
}

// CommitAndForget commits the watermarks of the partitions (a revoke), then
// stops tracking them, under one hold of the commit lock: no other commit can
// slip in between. It returns the commit's error, if any; the partitions are
// forgotten either way.
func (m *Manager) CommitAndForget(ctx context.Context, ps ...Partition) error {
	m.commitMu.Lock()
	defer m.commitMu.Unlock()
	err := m.commitLocked(ctx, ps)
	m.mu.Lock()
	for _, p := range ps {
		delete(m.parts, p)
	}
	m.mu.Unlock()
	return err
}

// Commit commits every owned partition whose watermark moved since its last
// commit. It does nothing when none moved.
func (m *Manager) Commit(ctx context.Context) error {
	m.commitMu.Lock()
	defer m.commitMu.Unlock()
	return m.commitLocked(ctx, nil)
}

// commitLocked commits the moved watermarks of only (or of all owned
// partitions when only is nil). commitMu must be held.
func (m *Manager) commitLocked(ctx context.Context, only []Partition) error {
	m.mu.Lock()
	toCommit := make(map[Partition]Offset)
	consider := func(p Partition, pt *part) {
		at, epoch, moved := pt.tracker.Watermark()
		if !moved {
			return // nothing completed since the assignment: nothing to commit
		}
		var meta string
		if done := pt.tracker.Completed(); len(done) > 0 {
			var n int
			meta, n = EncodeCompleted(at, done, m.cfg.MaxMetadata)
			if n < len(done) {
				m.metadataCut.Add(1)
			}
		}
		// Commit when the watermark moved, or when more completed beyond
		// it: that is what a restart may skip.
		if at > pt.committed || (at == pt.committed && meta != pt.meta) {
			toCommit[p] = Offset{At: at, Epoch: epoch, Metadata: meta}
		}
	}
	if only == nil {
		for p, pt := range m.parts {
			consider(p, pt)
		}
	} else {
		for _, p := range only {
			if pt, ok := m.parts[p]; ok {
				consider(p, pt)
			}
		}
	}
	covered := m.sinceCommit
	if only == nil {
		m.sinceCommit = 0
	}
	m.mu.Unlock()
	if len(toCommit) == 0 {
		return nil
	}

	cctx, cancel := context.WithTimeout(ctx, m.cfg.CommitTimeout)
	perPartition, err := m.cfg.Commit(cctx, toCommit)
	cancel()
	if err != nil {
		m.commitErrors.Add(1)
		if only == nil {
			m.mu.Lock()
			m.sinceCommit += covered // not committed: count it towards the next window
			m.mu.Unlock()
		}
		m.cfg.Logger.Warn("kbatch: commit failed", "partitions", len(toCommit), "err", err)
		return fmt.Errorf("offsets: commit: %w", err)
	}
	m.commits.Add(1)
	if only == nil {
		m.recordsCommitted.Add(covered)
	}

	var fenced []Fenced
	var firstErr error
	m.mu.Lock()
	for p, off := range toCommit {
		if perr := perPartition[p]; perr != nil {
			m.commitErrors.Add(1)
			if errors.Is(perr, ErrFenced) {
				if pt, ok := m.parts[p]; ok {
					resume, _, _ := pt.tracker.Watermark()
					fenced = append(fenced, Fenced{Partition: p, Resume: resume})
				}
				delete(m.parts, p)
				m.fenced.Add(1)
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("offsets: commit %s at %d: %w", p, off.At, perr)
			}
			m.cfg.Logger.Warn("kbatch: partition commit failed", "partition", p.String(), "offset", off.At, "err", perr)
			continue
		}
		if pt, ok := m.parts[p]; ok && off.At >= pt.committed {
			pt.committed, pt.meta = off.At, off.Metadata
		}
	}
	m.mu.Unlock()
	if len(fenced) > 0 && m.cfg.OnFenced != nil {
		m.cfg.OnFenced(fenced)
	}
	return firstErr
}

// Run commits on the window until ctx ends: when EveryRecords completed since
// the last commit, and every Interval when a watermark moved. It does not make
// a final commit; the owner calls Commit (or CommitAndForget) on close.
func (m *Manager) Run(ctx context.Context) {
	var tick <-chan time.Time
	if m.cfg.Policy.Interval > 0 {
		t := time.NewTicker(m.cfg.Policy.Interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-tick:
		}
		_ = m.Commit(ctx) // failures are logged and counted; the next window retries
	}
}

// Committed returns the last offset this member committed for p.
func (m *Manager) Committed(p Partition) (int64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pt, ok := m.parts[p]
	if !ok || pt.committed < 0 {
		return 0, false
	}
	return pt.committed, true
}

// Stats returns the manager's counters.
func (m *Manager) Stats() Stats {
	return Stats{
		Commits:          m.commits.Load(),
		CommitErrors:     m.commitErrors.Load(),
		Fenced:           m.fenced.Load(),
		RecordsCommitted: m.recordsCommitted.Load(),
		MetadataCut:      m.metadataCut.Load(),
	}
}
