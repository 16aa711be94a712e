package dedupe

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// Defaults of MemoryOptions.
const (
	DefaultMemoryMaxKeys = 100000
	DefaultMemoryMaxAge  = 24 * time.Hour
)

// errEmptyMarker is returned by Mark for an empty marker name: no store
// could read such an entry back as valid.
var errEmptyMarker = errors.New("dedupe: empty marker name")

// MemoryOptions configures a Memory store. The zero value is ready to use.
type MemoryOptions struct {
	// MaxKeys bounds how many keys the store keeps across all the
	// partitions assigned to it. Past it, the least recently written keys
	// are forgotten first. Keep it well above the batch size times the
	// partitions per process, or keys are forgotten within a batch.
	// Zero or negative means DefaultMemoryMaxKeys (100000).
	MaxKeys int
	// MaxAge is how long a key is kept after its last write; Entry.Expires
	// is the last write plus MaxAge. Zero or negative means
	// DefaultMemoryMaxAge (24h).
	MaxAge time.Duration
	// Backend holds the entries. Stores that share a backend share their
	// state as processes share a database: a store opened on the backend a
	// closed store used sees what that store wrote, and Assign fences the
	// partition's earlier owner on the same backend. Nil means a private
	// backend, so the state lives exactly as long as the store.
	Backend *MemoryBackend
	// Now is the clock. Nil means time.Now. Tests pass a fake clock to
	// exercise MaxAge without sleeping.
	Now func() time.Time
	// Logger receives a warning for each malformed entry skipped. Nil means
	// silent.
	Logger *slog.Logger
}

// MemoryBackend is the state Memory stores keep their entries in: per
// partition, the keys and an owner epoch. It stands for the database or the
// topic of a persistent store: it outlives the stores opened on it. The keys
// of a partition no store holds stay as they are; MaxAge and MaxKeys apply
// to them again when a store assigns the partition. The zero value is not
// usable; call NewMemoryBackend.
type MemoryBackend struct {
	mu    sync.Mutex // guards everything below and every Memory's fields marked "guarded by b.mu"
	parts map[Partition]*memPart
	slab  []memEntry // entries are cut from it, so that a new key costs no allocation of its own
	calls uint64     // numbers the writing calls, for Begin's one count per key and call
}

// slabSize is how many entries one allocation of the backend holds.
const slabSize = 256

// newEntry returns a zero entry cut from the backend's slab. Called with
// b.mu held.
func (b *MemoryBackend) newEntry() *memEntry {
	if len(b.slab) == 0 {
		b.slab = make([]memEntry, slabSize)
	}
	me := &b.slab[0]
	b.slab = b.slab[1:]
	return me
}

// NewMemoryBackend returns an empty backend.
func NewMemoryBackend() *MemoryBackend {
	return &MemoryBackend{parts: make(map[Partition]*memPart)}
}

// memPart is one partition's entries, kept in a list ordered by last write
// (oldest first) so that eviction and expiry pop from the front.
type memPart struct {
	epoch          uint64               // bumped by each Assign; writes need the writer's epoch to be the current one
	keys           map[string]*memEntry // the keys with an entry of their own, fallback keys apart
	offs           map[int64]*memEntry  // the fallback keys with an entry of their own, by offset
	oldest, newest *memEntry

	// The partition's fallback keys that need no entry of their own: done,
	// or begun once. offPrefix starts them.
	offPrefix   string
	done, begun offsetSpans
	// offsTop is the highest offset ever given an entry in offs (-1:
	// none). It is not lowered when the entry goes: it only bounds top.
	offsTop int64
}

// top returns an offset at or above the highest one whose fallback key has
// any state (an entry of its own or a span), -1 if none has: a fallback key
// above it is new, and a batch of first deliveries is answered without a
// search. Spans are ordered, so the last one of each holds its highest.
func (mp *memPart) top() int64 {
	t := mp.offsTop
	if n := len(mp.done.s); n > 0 {
		t = max(t, mp.done.s[n-1].hi)
	}
	if n := len(mp.begun.s); n > 0 {
		t = max(t, mp.begun.s[n-1].hi)
	}
	return t
}

type memEntry struct {
	key          string
	off          int64 // the offset of a fallback key (isOff)
	isOff        bool
	call         uint64 // the backend call that last counted it
	e            Entry  // Markers is owned by the backend, never handed out
	written      time.Time
	older, newer *memEntry
}

func (b *MemoryBackend) part(p Partition) *memPart {
	mp := b.parts[p]
	if mp == nil {
		mp = &memPart{keys: make(map[string]*memEntry), offs: make(map[int64]*memEntry), offPrefix: OffsetKey(p.Topic, p.Partition, 0), offsTop: -1}
		mp.offPrefix = mp.offPrefix[:len(mp.offPrefix)-1] // up to the offset
		b.parts[p] = mp
	}
	return mp
}

// keyRef is a key as a call gives it: a string, or for the partition's
// fallback keys their offset (the string is then built only if the key
// needs an entry of its own, and may be empty until then).
type keyRef struct {
	key   string
	off   int64
	isOff bool
}

// ref is the reference of key given as a string.
func (mp *memPart) ref(key string) keyRef {
	if o, ok := offsetOf(key, mp.offPrefix); ok {
		return keyRef{key: key, off: o, isOff: true}
	}
	return keyRef{key: key}
}

// refAt is the reference of keys[i] of a call; offsets is nil for a call
// of Store, else keys[i] == "" stands for the fallback key of offsets[i]
// (see OffsetStore).
func (mp *memPart) refAt(keys []string, offsets []int64, i int) keyRef {
	if offsets != nil && keys[i] == "" {
		return keyRef{off: offsets[i], isOff: true}
	}
	return mp.ref(keys[i])
}

// entry returns the entry of a key, nil if it has none of its own.
func (mp *memPart) entry(r keyRef) *memEntry {
	if r.isOff {
		if len(mp.offs) == 0 {
			return nil
		}
		return mp.offs[r.off]
	}
	return mp.keys[r.key]
}

func (mp *memPart) unlink(me *memEntry) {
	if me.older != nil {
		me.older.newer = me.newer
	} else {
		mp.oldest = me.newer
	}
	if me.newer != nil {
		me.newer.older = me.older
	} else {
		mp.newest = me.older
	}
	me.older, me.newer = nil, nil
}

func (mp *memPart) pushNewest(me *memEntry) {
	me.older = mp.newest
	if mp.newest != nil {
		mp.newest.newer = me
	} else {
		mp.oldest = me
	}
	mp.newest = me
}

func (mp *memPart) remove(me *memEntry) {
	mp.unlink(me)
	if me.isOff {
		delete(mp.offs, me.off)
	} else {
		delete(mp.keys, me.key)
	}
	*me = memEntry{} // its slot in the slab keeps neither the key nor the markers alive
}

// Memory is a Store that keeps entries in a MemoryBackend, bounded by a
// number of keys and an age. It is safe for concurrent use.
type Memory struct {
	b       *MemoryBackend
	maxKeys int
	maxAge  time.Duration
	now     func() time.Time
	log     *slog.Logger

	// guarded by b.mu
	owned     map[Partition]uint64 // partition -> the epoch Assign got
	closed    bool
	malformed int64
	evicted   int64
	expired   int64
	trimBuf   []*memPart // reused by trim
	// held is how many entries the partitions m owns hold, against
	// MaxKeys: exact when trim counts them, then moved by each call of m
	// by as much as the call changed its partition. Nothing else raises
	// the truth above it (an expiry in a Lookup, a partition fenced by
	// another store or released only lower it), but an Assign, which adds
	// a partition, sets recount.
	held     int
	recount  bool
	trimHeap oldestHeap // reused by trim
}

// MemoryStats are a Memory store's counters.
type MemoryStats struct {
	// Keys is how many keys the partitions assigned to the store hold now.
	Keys int
	// Malformed counts stored entries skipped because they were invalid.
	Malformed int64
	// Evicted counts keys forgotten to stay within MaxKeys.
	Evicted int64
	// Expired counts keys forgotten because MaxAge passed.
	Expired int64
}

var _ Store = (*Memory)(nil)

// NewMemory returns a memory store; see MemoryOptions for the defaults.
func NewMemory(opts MemoryOptions) *Memory {
	m := &Memory{
		b:       opts.Backend,
		maxKeys: opts.MaxKeys,
		maxAge:  opts.MaxAge,
		now:     opts.Now,
		log:     opts.Logger,
		owned:   make(map[Partition]uint64),
	}
	if m.b == nil {
		m.b = NewMemoryBackend()
	}
	if m.maxKeys <= 0 {
		m.maxKeys = DefaultMemoryMaxKeys
	}
	if m.maxAge <= 0 {
		m.maxAge = DefaultMemoryMaxAge
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m
}

// Assign takes ownership of p: it bumps p's owner epoch in the backend, so
// that the writes of any store that held p before fail with ErrFenced, and
// drops p's expired and malformed entries.
func (m *Memory) Assign(ctx context.Context, p Partition) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	mp := m.b.part(p)
	mp.epoch++
	m.owned[p] = mp.epoch
	now := m.now()
	for me := mp.oldest; me != nil; {
		next := me.newer
		m.check(p, mp, me, now)
		me = next
	}
	m.expireOldest(mp, now)
	m.recount = true // a partition joins: count them all again
	m.trim(0)
	return nil
}

// Lookup returns the entries of keys as they are, in the order of keys; an
// unknown or expired key is the zero Entry. It writes nothing.
func (m *Memory) Lookup(ctx context.Context, p Partition, keys []string) ([]Entry, error) {
	out := make([]Entry, len(keys))
	if err := m.lookupKeys(ctx, p, keys, nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// LookupOffsets is Lookup of keys where "" stands for the fallback key of
// the offset at the same index (see OffsetStore), into out.
func (m *Memory) LookupOffsets(ctx context.Context, p Partition, keys []string, offsets []int64, out []Entry) error {
	if err := checkOffsetCall(keys, offsets, out, true); err != nil {
		return err
	}
	return m.lookupKeys(ctx, p, keys, offsets, out)
}

func (m *Memory) lookupKeys(ctx context.Context, p Partition, keys []string, offsets []int64, out []Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	mp, err := m.writable(p)
	if err != nil {
		return err
	}
	now := m.now()
	m.expireOldest(mp, now)
	top := mp.top()
	for i := range keys {
		r := mp.refAt(keys, offsets, i)
		if r.isOff && r.off > top { // new: no entry, no span
			out[i] = Entry{}
			continue
		}
		if me := m.lookup(p, mp, r, now); me != nil {
			out[i] = copyEntry(me.e)
		} else if r.isOff {
			out[i] = m.spanEntry(mp, r.off)
		} else {
			out[i] = Entry{}
		}
	}
	return nil
}

// spanEntry is the entry of offset o's fallback key held in a span, or the
// zero Entry. Called with b.mu held.
func (m *Memory) spanEntry(mp *memPart, o int64) Entry {
	if i := mp.done.find(o); i >= 0 {
		return Entry{Done: true, Expires: mp.done.s[i].written.Add(m.maxAge)}
	}
	if i := mp.begun.find(o); i >= 0 {
		return Entry{Attempts: 1, Expires: mp.begun.s[i].written.Add(m.maxAge)}
	}
	return Entry{}
}

// entryFor returns key's map entry for a write, moving a fallback key out
// of its span first (its state seeds the entry); nil when key has neither.
// Called with b.mu held.
func (m *Memory) entryFor(p Partition, mp *memPart, r keyRef, now time.Time) *memEntry {
	if me := m.lookup(p, mp, r, now); me != nil {
		return me
	}
	if !r.isOff {
		return nil
	}
	e := m.spanEntry(mp, r.off)
	if !e.Done && e.Attempts == 0 {
		return nil
	}
	mp.done.remove(r.off)
	mp.begun.remove(r.off)
	me := m.write(mp, nil, r, now)
	me.e.Attempts, me.e.Done = e.Attempts, e.Done
	return me
}

// Begin increments the attempts of every key of keys that is not done, once
// per call (a key given twice in one call is one delivery), and returns the
// entries in the order of keys.
func (m *Memory) Begin(ctx context.Context, p Partition, keys []string) ([]Entry, error) {
	out := make([]Entry, len(keys))
	if err := m.beginKeys(ctx, p, keys, nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// BeginOffsets is Begin of keys where "" stands for the fallback key of
// the offset at the same index (see OffsetStore), into out.
func (m *Memory) BeginOffsets(ctx context.Context, p Partition, keys []string, offsets []int64, out []Entry) error {
	if err := checkOffsetCall(keys, offsets, out, true); err != nil {
		return err
	}
	return m.beginKeys(ctx, p, keys, offsets, out)
}

func (m *Memory) beginKeys(ctx context.Context, p Partition, keys []string, offsets []int64, out []Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	mp, err := m.writable(p)
	if err != nil {
		return err
	}
	before := mp.entries()
	now := m.now()
	m.b.calls++
	call := m.b.calls
	top, expires := mp.top(), now.Add(m.maxAge)
	for i := range keys {
		r := mp.refAt(keys, offsets, i)
		if r.isOff && r.off > top {
			// New (no entry, no span): begun once. A second copy in
			// this call is no longer above top and finds its span.
			mp.begun.add(r.off, call, now)
			top = r.off
			out[i] = Entry{Attempts: 1, Expires: expires}
			continue
		}
		if r.isOff && mp.entry(r) == nil {
			// A fallback key without an entry: in a span if it is new,
			// done, or begun in this very call.
			if j := mp.done.find(r.off); j >= 0 {
				out[i] = Entry{Done: true, Expires: mp.done.s[j].written.Add(m.maxAge)}
				continue
			}
			j := mp.begun.find(r.off)
			if j < 0 {
				mp.begun.add(r.off, call, now)
				out[i] = Entry{Attempts: 1, Expires: expires}
				continue
			}
			if mp.begun.s[j].call == call {
				out[i] = Entry{Attempts: 1, Expires: mp.begun.s[j].written.Add(m.maxAge)}
				continue
			}
		}
		me := m.entryFor(p, mp, r, now)
		if me != nil && (me.e.Done || me.call == call) {
			out[i] = copyEntry(me.e)
			continue
		}
		me = m.write(mp, me, r, now)
		me.e.Attempts++
		me.call = call
		out[i] = copyEntry(me.e)
	}
	m.expireOldest(mp, now)
	m.trim(mp.entries() - before)
	return nil
}

// Mark adds marker to key's markers unless it is there already.
func (m *Memory) Mark(ctx context.Context, p Partition, key, marker string) error {
	if marker == "" {
		return errEmptyMarker
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	mp, err := m.writable(p)
	if err != nil {
		return err
	}
	before := mp.entries()
	now := m.now()
	r := mp.ref(key)
	me := m.entryFor(p, mp, r, now)
	if me != nil && me.e.HasMarker(marker) {
		return nil
	}
	me = m.write(mp, me, r, now)
	me.e.Markers = append(me.e.Markers, marker)
	m.expireOldest(mp, now)
	m.trim(mp.entries() - before)
	return nil
}

// Done marks keys done.
func (m *Memory) Done(ctx context.Context, p Partition, keys []string) error {
	return m.doneKeys(ctx, p, keys, nil)
}

// DoneOffsets is Done of keys where "" stands for the fallback key of the
// offset at the same index (see OffsetStore).
func (m *Memory) DoneOffsets(ctx context.Context, p Partition, keys []string, offsets []int64) error {
	if err := checkOffsetCall(keys, offsets, nil, false); err != nil {
		return err
	}
	return m.doneKeys(ctx, p, keys, offsets)
}

func (m *Memory) doneKeys(ctx context.Context, p Partition, keys []string, offsets []int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	mp, err := m.writable(p)
	if err != nil {
		return err
	}
	before := mp.entries()
	now := m.now()
	m.b.calls++
	call := m.b.calls
	if mp.doneBegunRun(keys, offsets, call, now) {
		m.expireOldest(mp, now)
		m.trim(mp.entries() - before)
		return nil
	}
	for i := range keys {
		r := mp.refAt(keys, offsets, i)
		if r.isOff && mp.entry(r) == nil {
			if mp.done.find(r.off) < 0 {
				mp.begun.remove(r.off)
				mp.done.add(r.off, call, now)
			}
			continue
		}
		me := m.lookup(p, mp, r, now)
		if me != nil && me.e.Done {
			continue
		}
		me = m.write(mp, me, r, now)
		me.e.Done = true
	}
	m.expireOldest(mp, now)
	m.trim(mp.entries() - before)
	return nil
}

// doneBegunRun marks done, at once, a call's keys that are the offsets
// lo..hi in order, given as "", when they are exactly the last begun span
// (a batch whose first delivery its Begin counted), none has an entry of
// its own and no done span reaches lo: the span moves from begun to done,
// as the per-key way would leave it (one done span written by call at
// now). It reports whether it did. Called with b.mu held.
func (mp *memPart) doneBegunRun(keys []string, offsets []int64, call uint64, now time.Time) bool {
	if len(offsets) == 0 {
		return false
	}
	// The spans first: a call that is not the last begun run (a Done after
	// a FailedAt, keys of their own) goes key by key without a pass here.
	lo := offsets[0]
	hi := lo + int64(len(offsets)-1)
	nb, nd := len(mp.begun.s), len(mp.done.s)
	if nb == 0 || mp.begun.s[nb-1].lo != lo || mp.begun.s[nb-1].hi != hi ||
		mp.offsTop >= lo || (nd > 0 && mp.done.s[nd-1].hi >= lo) {
		return false
	}
	for i, k := range keys {
		if k != "" || offsets[i] != lo+int64(i) {
			return false
		}
	}
	mp.begun.s = mp.begun.s[:nb-1]
	mp.begun.n -= len(offsets)
	mp.done.s = append(mp.done.s, offsetSpan{lo: lo, hi: hi, call: call, written: now})
	mp.done.n += len(offsets)
	return true
}

// Release gives p up. Its entries stay in the backend for the next owner.
func (m *Memory) Release(p Partition) {
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	delete(m.owned, p)
}

// Close releases every partition; later calls fail with ErrClosed. The
// backend keeps the entries. A second Close does nothing.
func (m *Memory) Close() error {
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	m.closed = true
	clear(m.owned)
	return nil
}

// Stats returns the store's counters.
func (m *Memory) Stats() MemoryStats {
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	keys := 0
	for p, epoch := range m.owned {
		if mp := m.b.parts[p]; mp != nil && mp.epoch == epoch {
			keys += len(mp.keys) + len(mp.offs) + mp.done.n + mp.begun.n
		}
	}
	return MemoryStats{Keys: keys, Malformed: m.malformed, Evicted: m.evicted, Expired: m.expired}
}

// writable returns p's entries if m owns p: assigned to m and not claimed
// by a later Assign since. Called with b.mu held.
func (m *Memory) writable(p Partition) (*memPart, error) {
	if m.closed {
		return nil, ErrClosed
	}
	epoch, ok := m.owned[p]
	if !ok {
		return nil, ErrNotAssigned
	}
	mp := m.b.parts[p]
	if mp.epoch != epoch {
		return nil, ErrFenced
	}
	return mp, nil
}

// lookup returns key's live entry or nil, dropping it first if it is
// expired or malformed. Called with b.mu held.
func (m *Memory) lookup(p Partition, mp *memPart, r keyRef, now time.Time) *memEntry {
	me := mp.entry(r)
	if me == nil || !m.check(p, mp, me, now) {
		return nil
	}
	return me
}

// check drops me if it is malformed or expired and reports whether it was
// kept. Called with b.mu held.
func (m *Memory) check(p Partition, mp *memPart, me *memEntry, now time.Time) bool {
	if err := validEntry(me.e); err != nil {
		m.malformed++
		m.log.Warn("dedupe: malformed memory entry skipped", "partition", p.String(), "key", me.key, "err", err)
		mp.remove(me)
		return false
	}
	if !now.Before(me.e.Expires) {
		m.expired++
		mp.remove(me)
		return false
	}
	return true
}

// write prepares me (or a new entry for the key r when me is nil) for a write at
// now: it becomes the newest entry and expires MaxAge from now. The caller
// then changes the entry. Called with b.mu held.
func (m *Memory) write(mp *memPart, me *memEntry, r keyRef, now time.Time) *memEntry {
	if me == nil {
		me = m.b.newEntry()
		me.key, me.off, me.isOff = r.key, r.off, r.isOff
		if r.isOff {
			if me.key == "" {
				me.key = mp.offPrefix + strconv.FormatInt(r.off, 10)
			}
			mp.offs[r.off] = me
			mp.offsTop = max(mp.offsTop, r.off)
		} else {
			mp.keys[r.key] = me
		}
	} else {
		mp.unlink(me)
	}
	me.written = now
	me.e.Expires = now.Add(m.maxAge)
	mp.pushNewest(me)
	return me
}

// expireOldest forgets mp's oldest entries while they are expired. Called
// with b.mu held.
func (m *Memory) expireOldest(mp *memPart, now time.Time) {
	for me := mp.oldest; me != nil && !now.Before(me.e.Expires); me = mp.oldest {
		m.expired++
		mp.remove(me)
	}
	for _, ss := range []*offsetSpans{&mp.done, &mp.begun} {
		for len(ss.s) > 0 && !now.Before(ss.s[0].written.Add(m.maxAge)) {
			m.expired += int64(ss.popFront())
		}
	}
}

// trim forgets the least recently written keys of the partitions m owns
// until they hold at most MaxKeys entries (a span of fallback keys is one
// entry), after a call of m changed its partition's entries by delta. The
// partitions are counted only when held says they may be over the bound,
// and kept in a heap by their oldest write while keys are forgotten, so
// that a call costs neither a pass over every partition nor, for each key
// forgotten, another. Called with b.mu held.
func (m *Memory) trim(delta int) {
	m.held += delta
	if m.held <= m.maxKeys && !m.recount {
		return
	}
	m.recount = false
	total := 0
	parts := m.trimBuf[:0] // the partitions m still owns, looked up once
	for p, epoch := range m.owned {
		if mp := m.b.parts[p]; mp.epoch == epoch {
			total += mp.entries()
			parts = append(parts, mp)
		}
	}
	m.trimBuf = parts[:0]
	m.held = total
	if total <= m.maxKeys {
		return
	}
	h := &m.trimHeap // m's own, so that the heap's calls allocate nothing
	*h = (*h)[:0]
	for _, mp := range parts {
		if t, ok := mp.oldestWrite(); ok {
			*h = append(*h, partOldest{mp, t})
		}
	}
	heap.Init(h)
	for ; total > m.maxKeys && h.Len() > 0; total-- {
		mp := (*h)[0].mp
		m.evicted += int64(mp.forgetOldest())
		if t, ok := mp.oldestWrite(); ok {
			(*h)[0].t = t
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	clear((*h)[:cap(*h)]) // keeps no partition alive
	*h = (*h)[:0]
	m.held = total
}

// partOldest is a partition and the time of its least recently written
// entry or span, in trim's heap.
type partOldest struct {
	mp *memPart
	t  time.Time
}

// oldestHeap orders partitions by their least recently written entry
// (container/heap).
type oldestHeap []partOldest

func (h oldestHeap) Len() int           { return len(h) }
func (h oldestHeap) Less(i, j int) bool { return h[i].t.Before(h[j].t) }
func (h oldestHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *oldestHeap) Push(x any)        { *h = append(*h, x.(partOldest)) }
func (h *oldestHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// entries is how many entries mp holds against MaxKeys.
func (mp *memPart) entries() int {
	return len(mp.keys) + len(mp.offs) + len(mp.done.s) + len(mp.begun.s)
}

// oldestWrite is the time of mp's least recently written entry or span.
func (mp *memPart) oldestWrite() (time.Time, bool) {
	var t time.Time
	ok := false
	if mp.oldest != nil {
		t, ok = mp.oldest.written, true
	}
	for _, ss := range []*offsetSpans{&mp.done, &mp.begun} {
		if len(ss.s) > 0 && (!ok || ss.s[0].written.Before(t)) {
			t, ok = ss.s[0].written, true
		}
	}
	return t, ok
}

// forgetOldest forgets mp's least recently written entry or span and
// returns how many keys that was.
func (mp *memPart) forgetOldest() int {
	t, _ := mp.oldestWrite()
	for _, ss := range []*offsetSpans{&mp.done, &mp.begun} {
		if len(ss.s) > 0 && ss.s[0].written.Equal(t) && (mp.oldest == nil || !mp.oldest.written.Before(t)) {
			return ss.popFront()
		}
	}
	mp.remove(mp.oldest)
	return 1
}

// validEntry reports why e cannot have been written by a store, if it
// cannot.
func validEntry(e Entry) error {
	if e.Attempts < 0 {
		return fmt.Errorf("negative attempts %d", e.Attempts)
	}
	for i, mk := range e.Markers {
		if mk == "" {
			return errors.New("empty marker")
		}
		for _, prev := range e.Markers[:i] {
			if prev == mk {
				return fmt.Errorf("duplicate marker %q", mk)
			}
		}
	}
	return nil
}

// copyEntry returns e with a Markers slice of its own.
func copyEntry(e Entry) Entry {
	if len(e.Markers) > 0 {
		e.Markers = append([]string(nil), e.Markers...)
	} else {
		e.Markers = nil
	}
	return e
}
