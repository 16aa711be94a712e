package kafkastore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
)

// Store is the Kafka dedupe store. It is safe for concurrent use; see the
// package documentation for how it works.
type Store struct {
	opts Options // defaults filled in
	cl   *kgo.Client
	adm  *kadm.Client

	records   atomic.Int64
	malformed atomic.Int64
	fenced    atomic.Int64
	expired   atomic.Int64

	topicMu sync.Mutex           // held while a changelog topic is looked up or created
	topics  map[string]changelog // input topic -> its changelog; guarded by topicMu

	// Lock order: mu is never held while a partition's mu is taken.
	mu     sync.Mutex
	closed bool
	parts  map[dedupe.Partition]*partition // guarded by mu
}

// partition is the state of one assigned partition. Its mu is held for the
// whole of each call on the partition, produce and reads included; calls
// for one partition come from one goroutine at a time, so it is
// uncontended except by Release and Close.
type partition struct {
	mu        sync.Mutex
	p         dedupe.Partition
	changelog string
	released  bool // Release or Close was called, or a later Assign replaced it
	fenced    bool // a later owner's claim was seen after ours

	epoch int64 // our owner epoch: the offset of our claim record
	cur   int64 // the highest epoch seen in the log so far (>= epoch once loaded)
	next  int64 // the offset after the last changelog record folded into m

	m       map[string]entry    // the live entries
	pending map[string]struct{} // keys whose record in the log must be rewritten: a zombie's write follows ours, or the entry expired
	sweepAt int                 // sweep m for expired entries when it reaches this size
}

// Stats are a Store's counters since New.
type Stats struct {
	// Records is how many changelog records were read (loads and reads of
	// interleaved writes).
	Records int64
	// Malformed counts records skipped because they could not be decoded.
	Malformed int64
	// Fenced counts records ignored because a later owner had claimed the
	// partition before them: writes of a zombie.
	Fenced int64
	// Expired counts entries dropped because their retention had passed.
	Expired int64
}

// maxRepairs bounds the pending rewrites added to one produce round.
const maxRepairs = 1000

// minSweep is the smallest map size at which a partition sweeps its
// expired entries.
const minSweep = 4096

var _ dedupe.Store = (*Store)(nil)

// New returns a store. It connects lazily: nothing is created or read until
// the first Assign.
func New(opts Options) (*Store, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	// Security first, so that every client below (and each reader that
	// read makes from opts.ClientOpts) connects the same way.
	sec, err := opts.Security.Options()
	if err != nil {
		return nil, &OptionsError{"Security", "is invalid: " + err.Error()}
	}
	opts.ClientOpts = append(sec, opts.ClientOpts...)
	kopts := append(slices.Clone(opts.ClientOpts),
		kgo.SeedBrokers(opts.Brokers...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafkastore: creating the Kafka client: %w", err)
	}
	return &Store{
		opts:   opts,
		cl:     cl,
		adm:    kadm.NewClient(cl),
		topics: make(map[string]changelog),
		parts:  make(map[dedupe.Partition]*partition),
	}, nil
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Records:   s.records.Load(),
		Malformed: s.malformed.Load(),
		Fenced:    s.fenced.Load(),
		Expired:   s.expired.Load(),
	}
}

// Assign claims p and loads its entries: it creates the changelog topic if
// it is missing, writes an owner claim to changelog partition p, and reads
// the partition from its start up to that claim. Writes of earlier owners
// that land after the claim are ignored by every later load, and make their
// writer's next call fail with ErrFenced.
func (s *Store) Assign(ctx context.Context, p dedupe.Partition) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosed() {
		return dedupe.ErrClosed
	}
	cl, err := s.changelog(ctx, p.Topic)
	if err != nil {
		return closedOr(err)
	}
	if p.Partition < 0 || int(p.Partition) >= cl.partitions {
		return fmt.Errorf("kafkastore: partition %v: %q has %d partitions", p, p.Topic, cl.partitions)
	}
	ps := &partition{
		p:         p,
		changelog: cl.name,
		m:         make(map[string]entry),
		pending:   make(map[string]struct{}),
		sweepAt:   minSweep,
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()

	now := s.opts.Now()
	claimKey := newClaimKey()
	claim := &kgo.Record{
		Topic:     cl.name,
		Partition: p.Partition,
		Key:       []byte(claimKey),
		Value:     appendClaim(nil, now.UnixNano()),
	}
	if err := s.cl.ProduceSync(ctx, claim).FirstErr(); err != nil {
		return closedOr(fmt.Errorf("kafkastore: claiming %v in %s: %w", p, cl.name, err))
	}
	ps.epoch = claim.Offset
	claims := make(map[string]int64)
	// The claim is the last record read: it exists, whatever compaction
	// did before it, so the read has a record to stop at.
	if err := s.read(ctx, ps, -1, claim.Offset, now.UnixNano(), claims); err != nil {
		return fmt.Errorf("kafkastore: loading %v from %s: %w", p, cl.name, err)
	}
	if ps.cur != ps.epoch {
		// Unreachable unless the broker misplaced our claim.
		return fmt.Errorf("kafkastore: loading %v: epoch %d seen after our claim at %d", p, ps.cur, ps.epoch)
	}
	ps.next = claim.Offset + 1

	// Housekeeping in one round: rewrite what zombies overwrote, delete
	// expired entries, delete claims older than twice the retention (every
	// record written under them has expired by then).
	var old []*kgo.Record
	for k, at := range claims {
		if k != claimKey && at+2*int64(s.opts.Retention) < now.UnixNano() {
			old = append(old, ps.tombstone([]byte(k)))
		}
	}
	if len(old) > 0 || len(ps.pending) > 0 {
		if err := s.write(ctx, ps, nil, old); err != nil && !errors.Is(err, dedupe.ErrFenced) {
			s.opts.Logger.Warn("kafkastore: changelog housekeeping failed; it is retried with later writes",
				"partition", p.String(), "err", err)
		}
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return dedupe.ErrClosed
	}
	prev := s.parts[p]
	s.parts[p] = ps
	s.mu.Unlock()
	if prev != nil {
		prev.drop()
	}
	return nil
}

// Lookup returns the entries of keys from memory, in the order of keys; an
// unknown or expired key is the zero Entry.
func (s *Store) Lookup(ctx context.Context, p dedupe.Partition, keys []string) ([]dedupe.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ps, err := s.partition(p)
	if err != nil {
		return nil, err
	}
	defer ps.mu.Unlock()
	now := s.opts.Now().UnixNano()
	out := make([]dedupe.Entry, len(keys))
	for i, k := range keys {
		if e, ok := s.live(ps, k, now); ok {
			out[i] = e.export()
		}
	}
	return out, nil
}

// Begin increments the attempts of every key of keys that is not done, as if
// the keys were taken one by one (a key given twice is counted twice), writes
// the new entries in one produce round, and returns the entries in the order
// of keys.
func (s *Store) Begin(ctx context.Context, p dedupe.Partition, keys []string) ([]dedupe.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ps, err := s.partition(p)
	if err != nil {
		return nil, err
	}
	defer ps.mu.Unlock()
	now := s.opts.Now().UnixNano()
	expires := now + int64(s.opts.Retention)
	out := make([]dedupe.Entry, len(keys))
	u := newUpdates(len(keys))
	for i, k := range keys {
		e, ok := u.get(k)
		if !ok {
			e, ok = s.live(ps, k, now)
		}
		if ok && e.done {
			out[i] = e.export()
			continue
		}
		e.attempts++
		e.expires = expires
		u.set(k, e)
		out[i] = e.export()
	}
	if len(u.keys) > 0 {
		if err := s.write(ctx, ps, u, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Mark adds marker to key's markers unless it is there already, and writes
// the entry.
func (s *Store) Mark(ctx context.Context, p dedupe.Partition, key, marker string) error {
	if marker == "" {
		return errors.New("kafkastore: empty marker name")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ps, err := s.partition(p)
	if err != nil {
		return err
	}
	defer ps.mu.Unlock()
	now := s.opts.Now().UnixNano()
	e, _ := s.live(ps, key, now)
	if slices.Contains(e.markers, marker) {
		return nil
	}
	e.markers = append(slices.Clip(e.markers), marker) // a new array: the stored one is shared
	e.expires = now + int64(s.opts.Retention)
	u := newUpdates(1)
	u.set(key, e)
	return s.write(ctx, ps, u, nil)
}

// Done marks keys done and writes them in one produce round.
func (s *Store) Done(ctx context.Context, p dedupe.Partition, keys []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ps, err := s.partition(p)
	if err != nil {
		return err
	}
	defer ps.mu.Unlock()
	now := s.opts.Now().UnixNano()
	u := newUpdates(len(keys))
	for _, k := range keys {
		if _, dup := u.get(k); dup {
			continue
		}
		e, ok := s.live(ps, k, now)
		if ok && e.done {
			continue
		}
		e.done = true
		e.expires = now + int64(s.opts.Retention)
		u.set(k, e)
	}
	if len(u.keys) == 0 {
		return nil
	}
	return s.write(ctx, ps, u, nil)
}

// Release drops p's entries from memory; the changelog keeps them.
func (s *Store) Release(p dedupe.Partition) {
	s.mu.Lock()
	ps := s.parts[p]
	delete(s.parts, p)
	s.mu.Unlock()
	if ps != nil {
		ps.drop()
	}
}

// Close closes the store's client and drops every partition. Calls in
// flight fail; later calls fail with ErrClosed. A second Close does
// nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	parts := s.parts
	s.parts = nil
	s.mu.Unlock()
	s.cl.Close() // first, so that calls in flight fail fast and free their partitions
	for _, ps := range parts {
		ps.drop()
	}
	return nil
}

// closedOr returns ErrClosed for an error of a call that Close cut short,
// else err.
func closedOr(err error) error {
	if errors.Is(err, kgo.ErrClientClosed) {
		return fmt.Errorf("%w (%v)", dedupe.ErrClosed, err)
	}
	return err
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// partition returns p's state locked, or why p cannot be used.
func (s *Store) partition(p dedupe.Partition) (*partition, error) {
	s.mu.Lock()
	closed, ps := s.closed, s.parts[p]
	s.mu.Unlock()
	switch {
	case closed:
		return nil, dedupe.ErrClosed
	case ps == nil:
		return nil, dedupe.ErrNotAssigned
	}
	ps.mu.Lock()
	switch {
	case ps.released:
		ps.mu.Unlock()
		if s.isClosed() {
			return nil, dedupe.ErrClosed
		}
		return nil, dedupe.ErrNotAssigned
	case ps.fenced:
		ps.mu.Unlock()
		return nil, dedupe.ErrFenced
	}
	return ps, nil
}

// drop forgets the partition's entries.
func (ps *partition) drop() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.released = true
	ps.m, ps.pending = nil, nil
}

// live returns key's entry unless it is absent or expired; an expired entry
// is dropped and its record queued for deletion. Called with ps.mu held.
func (s *Store) live(ps *partition, key string, now int64) (entry, bool) {
	e, ok := ps.m[key]
	if !ok {
		return entry{}, false
	}
	if e.expires != 0 && e.expires <= now {
		delete(ps.m, key)
		ps.pending[key] = struct{}{}
		s.expired.Add(1)
		return entry{}, false
	}
	return e, true
}

// sweep drops the expired entries of a partition whose map doubled since
// the last sweep, queueing their records for deletion. Called with ps.mu
// held.
func (s *Store) sweep(ps *partition, now int64) {
	if len(ps.m) < ps.sweepAt {
		return
	}
	for k, e := range ps.m {
		if e.expires != 0 && e.expires <= now {
			delete(ps.m, k)
			ps.pending[k] = struct{}{}
			s.expired.Add(1)
		}
	}
	ps.sweepAt = max(minSweep, 2*len(ps.m))
}

// updates are the new entries of one call, in the order of their keys'
// first appearance.
type updates struct {
	keys []string
	at   map[string]int
	es   []entry
}

func newUpdates(n int) *updates {
	return &updates{keys: make([]string, 0, n), at: make(map[string]int, n), es: make([]entry, 0, n)}
}

func (u *updates) get(k string) (entry, bool) {
	if i, ok := u.at[k]; ok {
		return u.es[i], true
	}
	return entry{}, false
}

func (u *updates) set(k string, e entry) {
	if i, ok := u.at[k]; ok {
		u.es[i] = e
		return
	}
	u.at[k] = len(u.keys)
	u.keys = append(u.keys, k)
	u.es = append(u.es, e)
}

// write produces, in one round, the records of u, up to maxRepairs pending
// rewrites and extra, and folds them into ps. When the records landed right
// after the last record ps knows of, they are folded in directly; otherwise
// someone else wrote in between, and the records in between are read and
// folded in by the load rules, ours included: if a later owner's claim is
// among them, ps is fenced and write returns ErrFenced. Called with ps.mu
// held.
func (s *Store) write(ctx context.Context, ps *partition, u *updates, extra []*kgo.Record) error {
	now := s.opts.Now().UnixNano()
	s.sweep(ps, now)
	n := len(extra)
	if u != nil {
		n += len(u.keys)
	}
	recs := make([]*kgo.Record, 0, n+min(len(ps.pending), maxRepairs))
	// Rewrites come first, so that a record of u for the same key follows
	// them; keys of u need none.
	type repair struct {
		key  string
		gone bool
	}
	var repairs []repair
	for k := range ps.pending {
		if len(repairs) == maxRepairs {
			break
		}
		if u != nil {
			if _, ok := u.at[k]; ok {
				continue
			}
		}
		if e, ok := s.live(ps, k, now); ok {
			recs = append(recs, ps.record(k, e))
			repairs = append(repairs, repair{k, false})
		} else {
			recs = append(recs, ps.tombstone(recordKey(k)))
			repairs = append(repairs, repair{k, true})
		}
	}
	recs = append(recs, extra...)
	if u != nil {
		for i, k := range u.keys {
			recs = append(recs, ps.record(k, u.es[i]))
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if err := s.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		// Some records may have landed: the next write finds them in
		// the gap before its own and reads them back.
		return closedOr(fmt.Errorf("kafkastore: writing %v to %s: %w", ps.p, ps.changelog, err))
	}
	lo, hi := recs[0].Offset, recs[0].Offset
	for _, r := range recs[1:] {
		lo, hi = min(lo, r.Offset), max(hi, r.Offset)
	}
	if lo == ps.next && hi-lo+1 == int64(len(recs)) {
		for _, r := range repairs {
			delete(ps.pending, r.key)
		}
		if u != nil {
			for i, k := range u.keys {
				ps.m[k] = u.es[i]
				delete(ps.pending, k)
			}
		}
		ps.next = hi + 1
		return nil
	}
	if err := s.read(ctx, ps, ps.next, hi, now, nil); err != nil {
		return fmt.Errorf("kafkastore: reading back %v from %s: %w", ps.p, ps.changelog, err)
	}
	ps.next = hi + 1
	if ps.cur > ps.epoch {
		ps.fenced = true
		return dedupe.ErrFenced
	}
	return nil
}

// record is the changelog record of key's entry e, written under ps's
// epoch.
func (ps *partition) record(key string, e entry) *kgo.Record {
	return &kgo.Record{
		Topic:     ps.changelog,
		Partition: ps.p.Partition,
		Key:       recordKey(key),
		Value:     appendEntry(make([]byte, 0, entrySize(ps.epoch, e)), ps.epoch, e),
	}
}

// tombstone is a record deleting the changelog key k, written under ps's
// epoch.
func (ps *partition) tombstone(k []byte) *kgo.Record {
	return &kgo.Record{
		Topic:     ps.changelog,
		Partition: ps.p.Partition,
		Key:       k,
		Headers:   []kgo.RecordHeader{{Key: epochHeader, Value: strconv.AppendInt(nil, ps.epoch, 10)}},
	}
}

// export returns e as a dedupe.Entry with markers of its own.
func (e entry) export() dedupe.Entry {
	out := dedupe.Entry{Attempts: e.attempts, Done: e.done}
	if len(e.markers) > 0 {
		out.Markers = slices.Clone(e.markers)
	}
	if e.expires != 0 {
		out.Expires = time.Unix(0, e.expires)
	}
	return out
}
