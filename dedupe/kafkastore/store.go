package kafkastore

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/internal/offkey"
)

// Store is the Kafka dedupe store. It is safe for concurrent use; see the
// package documentation for how it works.
type Store struct {
	opts  Options // defaults filled in
	cl    *kgo.Client
	adm   *kadm.Client
	prods []*kgo.Client // write the changelogs: prods[0] is cl; see producer

	records   atomic.Int64
	malformed atomic.Int64
	fenced    atomic.Int64
	expired   atomic.Int64
	evicted   atomic.Int64

	topicMu sync.Mutex           // held while a changelog topic is looked up or created
	topics  map[string]changelog // input topic -> its changelog; guarded by topicMu

	leadersMu sync.Mutex          // guards the map, not the caches in it (each has its mu)
	leaders   map[string]*leaders // changelog -> its partitions' leaders

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

	epoch   int64              // our owner epoch: the offset of our claim record
	cur     int64              // the highest epoch seen in the log so far (>= epoch once loaded)
	claimed bool               // a claim that counts was seen
	void    map[int64]struct{} // offsets of claims that do not count: records under them are ignored
	next    int64              // the offset after the last changelog record folded into m

	m    map[string]entry   // the live entries not done: attempts and markers
	done map[keyHash]expSec // the keys done, by hash: their expiry and nothing else; not the partition's own fallback keys
	// The keys done whose hashes end as the partition's fallback keys do
	// (offFNV) hold an offset in their first 8 bytes: they are kept as
	// runs of offsets, not in done.
	runs      offRuns
	offPrefix string // the partition's fallback keys up to the offset
	offFNV    uint64
	pending   map[string]struct{} // keys whose record in the log must be rewritten: a zombie's write follows ours, the entry expired, or it is done
	sweepAt   int                 // sweep m and done for expired entries when they reach this size

	begun     begunSet             // keys begun once that have no record of their own
	begunRecs map[string]*begunRec // begun records with keys still only in them, by changelog key

	batches     map[string]int64    // records of keys done in one batch -> their expiry, to delete them once expired
	dropBatches map[string]struct{} // such records to delete now
	seq         int64               // numbers this owner's records of keys done

	// retry is the last Begin that failed: a Begin of the same keys right
	// after it is its retry and writes the same counts, so that a delivery
	// whose records landed although the call failed is counted once.
	retry *updates

	// inflight are the Done rounds produced and not yet settled, oldest
	// first; resend the records of rounds that failed, produced again
	// ahead of the next write's own (see rounds.go).
	inflight []*round
	resend   []*kgo.Record
}

// begunRec is a record of keys begun for the first time in one Begin.
type begunRec struct {
	key     string // its changelog key
	left    int    // its keys with no later record (own entry, done)
	expires int64
}

// unbegin takes a key out of its begun record, which is deleted from the
// log once no key is left in it.
func (ps *partition) unbegin(h keyHash) {
	if rec := ps.begun.remove(h); rec != nil {
		ps.unbegun(rec, 1)
	}
}

// unbegun counts n keys of rec out of it, and deletes it from the log once
// none is left.
func (ps *partition) unbegun(rec *begunRec, n int) {
	rec.left -= n
	if rec.left <= 0 {
		delete(ps.begunRecs, rec.key)
		ps.dropBatches[rec.key] = struct{}{}
	}
}

// forgetBegun drops a begun record and its keys (expired or deleted).
func (ps *partition) forgetBegun(rec *begunRec) {
	delete(ps.begunRecs, rec.key)
	if rec.left > 0 {
		ps.begun.removeRec(rec)
	}
	rec.left = 0
}

// stale reports whether a record written under epoch must be ignored: a
// later owner had claimed the partition before it (a zombie wrote it), or
// its writer's claim does not count.
func (ps *partition) stale(epoch int64) bool {
	if epoch < ps.cur {
		return true
	}
	_, void := ps.void[epoch]
	return void
}

// setDone records the hash of a key done until expires (the later expiry
// if it is done already).
func (ps *partition) setDone(h keyHash, expires int64) {
	e := toExpSec(expires)
	if o, ok := ps.ownOffset(h); ok {
		ps.runs.add(o, e)
		return
	}
	if old, ok := ps.done[h]; !ok || later(old, e) != old {
		ps.done[h] = e
	}
}

// doneRange records the partition's fallback keys of offsets lo through hi
// done until expires, each no longer begun.
func (ps *partition) doneRange(lo, hi uint64, expires int64) {
	if ps.begun.len() > 0 {
		ps.begun.removeRange(lo, hi, ps.unbegun)
	}
	ps.runs.addRange(lo, hi, toExpSec(expires))
}

// offHash is the hash of the partition's fallback key of offset o.
func (ps *partition) offHash(o uint64) keyHash { return fallbackHash(o, ps.offFNV) }

// ownOffset returns the offset a hash spells out if it is one of the
// partition's fallback keys.
func (ps *partition) ownOffset(h keyHash) (uint64, bool) { return fallbackOffset(h, ps.offFNV) }

// doneExp returns the expiry of a key done, expired or not.
func (ps *partition) doneExp(h keyHash) (expSec, bool) {
	if o, ok := ps.ownOffset(h); ok {
		return ps.runs.get(o)
	}
	exp, ok := ps.done[h]
	return exp, ok
}

// forgetExpired forgets a key done that expired at now, and returns how
// many keys it forgot: for one of the partition's fallback keys, every run
// expired (its whole run expired with it), rather than splitting its run
// one key at a time as the keys of a replay come.
func (ps *partition) forgetExpired(h keyHash, now int64) int {
	if _, ok := ps.ownOffset(h); ok {
		return ps.runs.expire(now)
	}
	delete(ps.done, h)
	return 1
}

// doneLen is how many keys done the partition holds.
func (ps *partition) doneLen() int { return len(ps.done) + ps.runs.n }

// hash is hashKey(key), the partition's own fallback keys spelt out
// without hashing their topic and partition again.
func (ps *partition) hash(key string) keyHash {
	if len(key) > len(ps.offPrefix) && key[:len(ps.offPrefix)] == ps.offPrefix {
		if o, ok := offkey.ParseDigits(key[len(ps.offPrefix):]); ok {
			return ps.offHash(uint64(o))
		}
	}
	return hashKey(key)
}

// notDone reports whether h is surely not in done: a fallback key of the
// partition above every such key done. Offsets come in increasing order,
// so a batch of first deliveries is answered without touching done.
func (ps *partition) notDone(h keyHash) bool {
	if ps.doneLen() == 0 {
		return true
	}
	o, ok := ps.ownOffset(h)
	if !ok {
		return false
	}
	top, held := ps.runs.last()
	return !held || o > top
}

// expSec is a done key's expiry in whole Unix seconds, rounded up (0: no
// expiry): 4 bytes a key rather than 8, which with the 16-byte hash keeps a
// done key near 40 bytes in memory. It lasts until 2106.
type expSec uint32

func toExpSec(ns int64) expSec {
	switch {
	case ns == 0:
		return 0
	case ns < 0:
		return 1 // long expired
	case ns >= math.MaxUint32*int64(time.Second):
		return math.MaxUint32
	}
	return expSec((ns + int64(time.Second) - 1) / int64(time.Second))
}

// nanos is the expiry in Unix nanoseconds (0: none).
func (e expSec) nanos() int64 { return int64(e) * int64(time.Second) }

// live reports whether the key has not expired at now.
func (e expSec) live(now int64) bool { return e == 0 || e.nanos() > now }

// bound forgets the keys done that expire first while the partition holds
// more than MaxKeys keys, down to seven eighths of it so that the scan is
// paid once per MaxKeys/8 new keys. A forgotten key is handed out again if
// its record comes back: at-least-once, never a loss. Called with ps.mu
// held.
func (s *Store) bound(ps *partition) {
	limit := s.opts.MaxKeys
	if limit <= 0 || ps.doneLen()+len(ps.m) <= limit {
		return
	}
	target := limit - limit/8
	excess := ps.doneLen() + len(ps.m) - target
	if excess <= 0 {
		return
	}
	// The expiry below which excess keys lie, estimated from a sample
	// of the map (its order is random) and the runs of offsets, each
	// weighed by the keys it stands for: then one pass over each deletes
	// them, the runs' lowest offsets first.
	type weighed struct {
		exp expSec
		n   float64
	}
	sample := make([]weighed, 0, 256+len(ps.runs.r))
	for _, exp := range ps.done {
		sample = append(sample, weighed{exp: exp})
		if len(sample) == 256 {
			break
		}
	}
	for i := range sample {
		sample[i].n = float64(len(ps.done)) / float64(len(sample))
	}
	for _, r := range ps.runs.r {
		sample = append(sample, weighed{exp: r.exp, n: float64(r.hi - r.lo + 1)})
	}
	if len(sample) == 0 {
		return
	}
	slices.SortFunc(sample, func(a, b weighed) int { return cmp.Compare(a.exp, b.exp) })
	cut := sample[len(sample)-1].exp
	sum := 0.0
	for _, w := range sample {
		if sum += w.n; sum >= float64(excess) {
			cut = w.exp
			break
		}
	}
	forgot := ps.runs.evict(cut, excess)
	for h, exp := range ps.done {
		if forgot >= excess {
			break
		}
		if exp <= cut {
			delete(ps.done, h)
			forgot++
		}
	}
	s.evicted.Add(int64(forgot))
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
	// Evicted counts keys done forgotten to stay within Options.MaxKeys:
	// a record of such a key that comes again is handed out again.
	Evicted int64
}

// maxClaims bounds the claims one Assign writes when concurrent claims
// void its own.
const maxClaims = 5

// newPartition returns the empty state of p, whose changelog is changelog.
func newPartition(p dedupe.Partition, changelog string) *partition {
	key0 := dedupe.OffsetKey(p.Topic, p.Partition, 0)
	off, _ := offsetHash(key0)
	return &partition{
		offPrefix:   key0[:len(key0)-1],
		offFNV:      binary.BigEndian.Uint64(off[8:]),
		p:           p,
		changelog:   changelog,
		void:        make(map[int64]struct{}),
		m:           make(map[string]entry),
		done:        make(map[keyHash]expSec),
		begun:       begunSet{fnv: binary.BigEndian.Uint64(off[8:])},
		begunRecs:   make(map[string]*begunRec),
		pending:     make(map[string]struct{}),
		batches:     make(map[string]int64),
		dropBatches: make(map[string]struct{}),
		sweepAt:     minSweep,
	}
}

// endOffset reads the end offset of a changelog partition, with a
// ListOffsets request of its own (not kadm's, which goes through cached
// metadata where a changelog just created stays unknown for a while),
// retried while the broker does not know the partition yet.
func (s *Store) endOffset(ctx context.Context, topic string, partition int32) (int64, error) {
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var resp *kmsg.ListOffsetsResponse
		leader, _, err := s.leaderOf(ctx, topic, partition)
		if err == nil {
			resp, err = endOffsetsRequest(topic, partition).RequestWith(ctx, s.cl.Broker(int(leader)))
		}
		if err == nil {
			err = fmt.Errorf("no end offset for %s/%d in the answer", topic, partition)
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if t.Topic == topic && p.Partition == partition {
						if err = kerr.ErrorForCode(p.ErrorCode); err == nil {
							return p.Offset, nil
						}
					}
				}
			}
		}
		if attempt == 10 || !kerr.IsRetriable(err) && !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return 0, err
		}
		s.forgetLeaders(topic)
		if !sleepCtx(ctx, wait) {
			return 0, ctx.Err()
		}
		wait = min(2*wait, time.Second)
	}
}

// endOffsetsRequest is a ListOffsets request for the end offsets of
// partitions of topic, all led by the broker it is sent to.
func endOffsetsRequest(topic string, partitions ...int32) *kmsg.ListOffsetsRequest {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, p := range partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = -1 // the end
		rp.CurrentLeaderEpoch = -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return req
}

// leaderOf returns the leader of a changelog partition and the topic's ID,
// from the store's cache of the changelog's leaders, filled by a Metadata
// request of its own when it holds none for the partition (not kgo's
// cached metadata, for the reason partitionCounts gives). Reads and end
// offset lookups that fail at the leader forget the changelog's leaders
// (forgetLeaders) before they try again. One lookup serves every partition
// of the changelog: a member assigned 1024 partitions asked for the
// metadata of all 1024 twice for each, gigabytes of allocations in a
// rebalance.
func (s *Store) leaderOf(ctx context.Context, topic string, partition int32) (int32, [16]byte, error) {
	c := s.leaderCache(topic)
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(partition) < len(c.leaders) && c.leaders[partition] >= 0 {
		return c.leaders[partition], c.id, nil
	}
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, s.cl)
	if err != nil {
		return 0, [16]byte{}, err
	}
	for _, t := range resp.Topics {
		if t.Topic == nil || *t.Topic != topic {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return 0, [16]byte{}, err
		}
		leaders := make([]int32, len(t.Partitions))
		for i := range leaders {
			leaders[i] = -1
		}
		var perr error
		for _, p := range t.Partitions {
			if p.Partition < 0 || int(p.Partition) >= len(leaders) {
				continue
			}
			if err := kerr.ErrorForCode(p.ErrorCode); err == nil {
				leaders[p.Partition] = p.Leader
			} else if p.Partition == partition {
				perr = err
			}
		}
		c.leaders, c.id = leaders, t.TopicID
		switch {
		case perr != nil:
			return 0, [16]byte{}, perr
		case int(partition) >= len(leaders):
			return 0, [16]byte{}, kerr.UnknownTopicOrPartition
		case leaders[partition] < 0:
			return 0, [16]byte{}, kerr.LeaderNotAvailable
		}
		return leaders[partition], t.TopicID, nil
	}
	return 0, [16]byte{}, kerr.UnknownTopicOrPartition
}

// leaders is the store's cache of one changelog's partition leaders.
type leaders struct {
	mu      sync.Mutex // held across a lookup, so that one request serves the partitions waiting for it
	leaders []int32    // by partition; -1: none known
	id      [16]byte   // the topic's ID
}

// leaderCache returns topic's cache of leaders.
func (s *Store) leaderCache(topic string) *leaders {
	s.leadersMu.Lock()
	defer s.leadersMu.Unlock()
	c := s.leaders[topic]
	if c == nil {
		if s.leaders == nil {
			s.leaders = make(map[string]*leaders)
		}
		c = &leaders{}
		s.leaders[topic] = c
	}
	return c
}

// forgetLeaders drops topic's cached leaders: the next lookup asks the
// cluster again.
func (s *Store) forgetLeaders(topic string) {
	c := s.leaderCache(topic)
	c.mu.Lock()
	c.leaders = nil
	c.mu.Unlock()
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
	// Security first, so that every client below connects the same way.
	sec, err := opts.Security.Options()
	if err != nil {
		return nil, &OptionsError{"Security", "is invalid: " + err.Error()}
	}
	opts.ClientOpts = append(sec, opts.ClientOpts...)
	kopts := append(slices.Clone(opts.ClientOpts),
		kgo.SeedBrokers(opts.Brokers...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Begin, Mark and claims write with ProduceSync, which sends at
		// once the partition's records it is given and those lingering
		// before them: a Done's, produced without it, wait that long for
		// the next write to ride with it (see rounds.go).
		kgo.ProducerLinger(opts.DoneLinger),
	)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafkastore: creating the Kafka client: %w", err)
	}
	prods := []*kgo.Client{cl}
	for len(prods) < opts.Producers {
		pc, err := kgo.NewClient(kopts...)
		if err != nil {
			for _, c := range prods {
				c.Close()
			}
			return nil, fmt.Errorf("kafkastore: creating the Kafka client: %w", err)
		}
		prods = append(prods, pc)
	}
	return &Store{
		prods:  prods,
		opts:   opts,
		cl:     cl,
		adm:    kadm.NewClient(cl),
		topics: make(map[string]changelog),
		parts:  make(map[dedupe.Partition]*partition),
	}, nil
}

// producer is the client that writes the changelog partition partition:
// always the same one, so that the partition's writes keep their order
// (each client's producer is idempotent and keeps a partition's records in
// order; two clients would not).
func (s *Store) producer(partition int32) *kgo.Client {
	return s.prods[int(partition)%len(s.prods)]
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Records:   s.records.Load(),
		Malformed: s.malformed.Load(),
		Fenced:    s.fenced.Load(),
		Expired:   s.expired.Load(),
		Evicted:   s.evicted.Load(),
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
	var ps *partition
	var claimKey string
	var claims map[string]int64
	now := s.opts.Now()
	// A claim counts only if it saw the latest claim before it (see
	// apply): if another landed between the end offset read and ours, the
	// load finds ours void and claims again, with a new end offset.
	for attempt := 1; ; attempt++ {
		base, err := s.endOffset(ctx, cl.name, p.Partition)
		if err != nil {
			return closedOr(fmt.Errorf("kafkastore: reading the end of %s/%d: %w", cl.name, p.Partition, err))
		}
		ps = newPartition(p, cl.name)
		ps.mu.Lock()
		claimKey = newClaimKey()
		claim := &kgo.Record{
			Topic:     cl.name,
			Partition: p.Partition,
			Key:       []byte(claimKey),
			Value:     appendClaim(nil, now.UnixNano()),
			Headers:   []kgo.RecordHeader{{Key: baseHeader, Value: strconv.AppendInt(nil, base, 10)}},
		}
		if err := s.produceClaim(ctx, claim); err != nil {
			ps.mu.Unlock()
			return closedOr(fmt.Errorf("kafkastore: claiming %v in %s: %w", p, cl.name, err))
		}
		ps.epoch = claim.Offset
		claims = make(map[string]int64)
		// The claim is the last record read: it exists, whatever compaction
		// did before it, so the read has a record to stop at.
		if err := s.read(ctx, ps, -1, claim.Offset, now.UnixNano(), claims); err != nil {
			ps.mu.Unlock()
			return fmt.Errorf("kafkastore: loading %v from %s: %w", p, cl.name, err)
		}
		if ps.cur == ps.epoch {
			ps.next = claim.Offset + 1
			break
		}
		ps.mu.Unlock()
		if attempt == maxClaims {
			return fmt.Errorf("kafkastore: claiming %v: %d claims in a row lost to concurrent claims", p, attempt)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	defer ps.mu.Unlock()

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
		_ = prev.drop() // replaced: its writes, if any still land, are under a claim before ours
	}
	return nil
}

// produceClaim writes a claim and waits for it. It may be the first record
// the partition's producer writes to the changelog, before the client knows
// the topic's partitions: ProduceSync then cannot send it at once and it
// would linger DoneLinger, so the client is flushed instead (which also
// sends, early, the Done records of other partitions lingering there).
func (s *Store) produceClaim(ctx context.Context, claim *kgo.Record) error {
	pc := s.producer(claim.Partition)
	if leader, _, _ := pc.PartitionLeader(claim.Topic, claim.Partition); leader >= 0 {
		return pc.ProduceSync(ctx, claim).FirstErr()
	}
	res := make(chan error, 1)
	pc.Produce(ctx, claim, func(_ *kgo.Record, err error) { res <- err })
	_ = pc.Flush(ctx) // its failure is the claim's, below
	return <-res
}

// Prepare looks up the changelog of the input topic, creating it
// (compacted, with the input's partition count) if it does not exist, and
// checks it, as the first Assign of one of input's partitions would, then
// waits until the leader of each of its partitions serves it. Call it at
// start-up to fail fast on a missing topic, an ACL or a changelog of the
// wrong partition count, and to take the topic's creation out of the
// group's first rebalance. Assign works without it.
func (s *Store) Prepare(ctx context.Context, input string) error {
	if s.isClosed() {
		return dedupe.ErrClosed
	}
	c, err := s.changelog(ctx, input)
	if err != nil {
		return err
	}
	if err := s.ready(ctx, c); err != nil {
		return fmt.Errorf("kafkastore: waiting for %s to be served: %w", c.name, err)
	}
	return nil
}

// ready waits until the leader of every partition of changelog c answers
// a ListOffsets request for it, one request per leader and round. A topic
// just created is in the metadata before its leaders serve it: Kafka 4.3.1
// answered NOT_LEADER_OR_FOLLOWER for seconds after it created 1024
// partitions, and each Assign in the meantime waited through retries of
// its own.
func (s *Store) ready(ctx context.Context, c changelog) error {
	left := make([]int32, c.partitions)
	for i := range left {
		left[i] = int32(i)
	}
	wait := 20 * time.Millisecond
	for {
		var next []int32
		var lastErr error
		byLeader := make(map[int32][]int32)
		for _, p := range left {
			leader, _, err := s.leaderOf(ctx, c.name, p)
			if err != nil {
				lastErr = err
				next = append(next, p)
				continue
			}
			byLeader[leader] = append(byLeader[leader], p)
		}
		for leader, ps := range byLeader {
			resp, err := endOffsetsRequest(c.name, ps...).RequestWith(ctx, s.cl.Broker(int(leader)))
			if err != nil {
				lastErr = err
				next = append(next, ps...)
				continue
			}
			served := make(map[int32]bool, len(ps))
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if t.Topic != c.name {
						continue
					}
					if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
						lastErr = err
					} else {
						served[p.Partition] = true
					}
				}
			}
			for _, p := range ps {
				if !served[p] {
					next = append(next, p)
				}
			}
		}
		if len(next) == 0 {
			return nil
		}
		if lastErr == nil {
			lastErr = errors.New("partitions missing from the answers")
		}
		if isKafkaError(lastErr) && !kerr.IsRetriable(lastErr) {
			return lastErr
		}
		s.forgetLeaders(c.name)
		if !sleepCtx(ctx, wait) {
			return fmt.Errorf("%d partitions not served yet (%w): %w", len(next), lastErr, ctx.Err())
		}
		wait = min(2*wait, 500*time.Millisecond)
		left = next
	}
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

// Begin increments the attempts of every key of keys that is not done, once
// per call (a key given twice is one delivery), writes the new entries in
// one produce round, and returns the entries in the order of keys. A Begin
// of the same keys right after a Begin that failed is its retry: it writes
// the counts the failed one tried to write, so that a delivery is counted
// once whether or not the failed write landed.
func (s *Store) Begin(ctx context.Context, p dedupe.Partition, keys []string) ([]dedupe.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ps, err := s.partition(p)
	if err != nil {
		return nil, err
	}
	defer ps.mu.Unlock()
	out := make([]dedupe.Entry, len(keys))
	if err := s.begin(ctx, ps, keys, out); err != nil {
		return nil, err
	}
	return out, nil
}

// begin is Begin on ps, whose mu the caller holds, with the entries
// written into out.
func (s *Store) begin(ctx context.Context, ps *partition, keys []string, out []dedupe.Entry) error {
	now := s.opts.Now().UnixNano()
	expires := now + int64(s.opts.Retention)
	u := ps.retry
	ps.retry = nil
	if u == nil || !slices.Equal(u.asked, keys) {
		u = newUpdates(len(keys))
		u.asked = slices.Clone(keys)
		for _, k := range keys {
			if _, dup := u.get(k); dup {
				continue
			}
			h := ps.hash(k)
			e, ok := s.liveHashed(ps, k, h, now)
			if ok && e.done {
				continue
			}
			if !ok {
				// Begun for the first time: its hash goes in the call's
				// begun record, not a record of its own.
				u.addFirst(k, h, expires)
				continue
			}
			e.attempts++
			e.expires = expires
			u.set(k, e)
		}
	}
	for i, k := range keys {
		if e, ok := u.get(k); ok {
			out[i] = e.export()
		} else if e, ok := s.live(ps, k, now); ok {
			out[i] = e.export()
		} else {
			out[i] = dedupe.Entry{}
		}
	}
	if len(u.keys) > 0 {
		var extra []*kgo.Record
		if len(u.firsts) > 0 {
			extra = append(extra, ps.begunRecord(expires, u.firsts))
		}
		if err := s.write(ctx, ps, u, extra); err != nil {
			if !errors.Is(err, dedupe.ErrFenced) {
				ps.retry = u
			}
			return err
		}
	}
	return nil
}

// begunRecord is the record of the keys hs begun for the first time in one
// Begin.
func (ps *partition) begunRecord(expires int64, hs []keyHash) *kgo.Record {
	return ps.setRecord(begunPrefix, appendHashes(make([]byte, 0, 32+len(hs)*keyHashSize), kindBegun, ps.epoch, expires, hs))
}

// setRecord is a record of keys done or begun (prefix donePrefix or
// begunPrefix) holding value, under a changelog key of its own: the
// prefix, this owner's epoch and a new number of this owner's.
func (ps *partition) setRecord(prefix string, value []byte) *kgo.Record {
	ps.seq++
	return &kgo.Record{
		Topic:     ps.changelog,
		Partition: ps.p.Partition,
		Key:       []byte(prefix + strconv.FormatInt(ps.epoch, 10) + "/" + strconv.FormatInt(ps.seq, 10)),
		Value:     value,
	}
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
	ps.retry = nil
	e, _ := s.live(ps, key, now)
	if e.done || slices.Contains(e.markers, marker) {
		return nil // a done key keeps no markers: it is never handed out again
	}
	e.markers = append(slices.Clip(e.markers), marker) // a new array: the stored one is shared
	e.expires = now + int64(s.opts.Retention)
	u := newUpdates(1)
	u.set(key, e)
	return s.write(ctx, ps, u, nil)
}

// Done marks keys done and writes them in one produce round: a record of
// the runs of offsets of the partition's own fallback keys, a record
// holding the 128-bit hashes of the other keys (a key done needs nothing
// but its hash and its expiry), and a tombstone for each key that had a
// record of its own (attempts or markers), which these now replace.
func (s *Store) Done(ctx context.Context, p dedupe.Partition, keys []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ps, err := s.partition(p)
	if err != nil {
		return err
	}
	defer ps.mu.Unlock()
	return s.done(ctx, ps, keys, nil)
}

// done is Done on ps, whose mu the caller holds; with offsets (as long as
// keys), keys[i] == "" stands for the partition's fallback key of
// offsets[i], as in DoneOffsets.
func (s *Store) done(ctx context.Context, ps *partition, keys []string, offsets []int64) error {
	ps.retry = nil
	now := s.opts.Now().UnixNano()
	expires := now + int64(s.opts.Retention)
	if runs := ps.newRuns(keys, offsets); runs != nil {
		// The common call: a batch of first deliveries done, above
		// every key of the partition done, none with an entry of its
		// own. Its runs record is all there is to write.
		return s.doneRecords(ctx, ps, []*kgo.Record{ps.setRecord(donePrefix, appendRuns(make([]byte, 0, 40+len(runs)*4), ps.epoch, expires, ps.offFNV, runs))}, now)
	}
	var hs []keyHash
	var extra []*kgo.Record
	var seen map[keyHash]struct{}
	// The partition's own fallback keys go in a runs record: their
	// offsets, in order, without repeats.
	offs := make([]ownKey, 0, len(keys))
	for i, k := range keys {
		if k == "" && offsets != nil {
			if o := offsets[i]; o >= 0 {
				offs = append(offs, ownKey{uint64(o), ""}) // its string only if ps.m needs it
				continue
			}
			k = dedupe.OffsetKey(ps.p.Topic, ps.p.Partition, offsets[i])
		}
		h := ps.hash(k)
		if o, ok := ps.ownOffset(h); ok {
			offs = append(offs, ownKey{o, k})
			continue
		}
		if seen == nil {
			seen = make(map[keyHash]struct{})
		}
		if _, dup := seen[h]; dup {
			continue
		}
		seen[h] = struct{}{}
		if exp, ok := ps.doneExp(h); ok && exp.live(now) {
			continue
		}
		if _, ok := ps.m[k]; ok {
			extra = append(extra, ps.tombstone(recordKey(k)))
		}
		hs = append(hs, h)
	}
	if !slices.IsSortedFunc(offs, ownKey.cmp) {
		slices.SortFunc(offs, ownKey.cmp)
	}
	var runs []offRun
	top, held := ps.runs.last()
	for i, ok := range offs {
		if i > 0 && offs[i-1].o == ok.o {
			continue
		}
		if held && ok.o <= top { // else surely not done yet (see notDone)
			if exp, done := ps.runs.get(ok.o); done && exp.live(now) {
				continue
			}
		}
		if len(ps.m) > 0 {
			key := ok.key
			if key == "" {
				key = ps.offKey(ok.o)
			}
			if _, had := ps.m[key]; had {
				extra = append(extra, ps.tombstone(recordKey(key)))
			}
		}
		if n := len(runs); n > 0 && runs[n-1].hi+1 == ok.o {
			runs[n-1].hi = ok.o
		} else {
			runs = append(runs, offRun{lo: ok.o, hi: ok.o})
		}
	}
	if len(hs) > 0 {
		extra = append(extra, ps.setRecord(donePrefix, appendHashes(make([]byte, 0, 32+len(hs)*keyHashSize), kindDone, ps.epoch, expires, hs)))
	}
	if len(runs) > 0 {
		extra = append(extra, ps.setRecord(donePrefix, appendRuns(make([]byte, 0, 40+len(runs)*4), ps.epoch, expires, ps.offFNV, runs)))
	}
	return s.doneRecords(ctx, ps, extra, now)
}

// newRuns returns the runs of offsets of a Done call whose keys are all the
// partition's fallback keys, in increasing offset order, above every such
// key done, when the partition holds no entry of its own (m); else nil, and
// done takes the call key by key.
func (ps *partition) newRuns(keys []string, offsets []int64) []offRun {
	if len(ps.m) > 0 || offsets == nil {
		return nil
	}
	lo, ok := ownAscending(keys, offsets)
	if !ok {
		return nil
	}
	if top, held := ps.runs.last(); held && lo <= top {
		return nil
	}
	runs := make([]offRun, 0, 1)
	for _, o := range offsets {
		if n := len(runs); n > 0 && runs[n-1].hi+1 == uint64(o) {
			runs[n-1].hi = uint64(o)
		} else {
			runs = append(runs, offRun{lo: uint64(o), hi: uint64(o)})
		}
	}
	return runs
}

// doneRecords writes the records of a Done call: folded at once and
// produced as a round acknowledged before the next write's records, or
// written and waited for when an earlier round failed or too many are in
// flight.
func (s *Store) doneRecords(ctx context.Context, ps *partition, extra []*kgo.Record, now int64) error {
	if len(extra) == 0 {
		return nil
	}
	if len(ps.resend) > 0 || len(ps.inflight) >= maxRounds || ps.roundFailed() {
		// An earlier round failed (this call reports it and writes it
		// again), or too many are in flight: wait, as any write does.
		return s.write(ctx, ps, nil, extra)
	}
	// The keys are done in memory now, and their records are acknowledged
	// before the next write's (see rounds.go).
	for _, r := range extra {
		s.foldOwn(ps, r, now)
	}
	ps.inflight = append(ps.inflight, s.produceRound(extra))
	return nil
}

// foldOwn folds a record of this owner's that is not in the log yet: a
// record of keys done, or the tombstone of a key's own record. Called with
// ps.mu held.
func (s *Store) foldOwn(ps *partition, r *kgo.Record, now int64) {
	if kind := hashSetKind(r.Key); kind != 0 {
		s.foldHashes(ps, r, kind, now, true)
		return
	}
	if key, isClaim, err := parseKey(r.Key); err == nil && !isClaim && r.Value == nil {
		delete(ps.m, key)
		delete(ps.pending, key)
	}
}

// ownKey is one of the partition's fallback keys and its offset; key is ""
// when the key was given by its offset (DoneOffsets).
type ownKey struct {
	o   uint64
	key string
}

func (a ownKey) cmp(b ownKey) int { return cmp.Compare(a.o, b.o) }

// Release drops p's entries from memory; the changelog keeps them.
func (s *Store) Release(p dedupe.Partition) {
	s.mu.Lock()
	ps := s.parts[p]
	delete(s.parts, p)
	s.mu.Unlock()
	if ps != nil {
		ps.mu.Lock()
		s.flush(ps) // it logs what failed
		ps.mu.Unlock()
		_ = ps.drop()
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
	// The Done rounds in flight land first (bounded: a call in flight may
	// hold its partition, so they are not waited for one by one).
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	for _, pc := range s.prods {
		_ = pc.Flush(ctx)
	}
	cancel()
	for _, pc := range s.prods { // then, so that calls in flight fail fast and free their partitions
		pc.Close()
	}
	for _, ps := range parts {
		if err := ps.drop(); err != nil {
			s.opts.Logger.Warn("kafkastore: keys done could not be written before the store closed; their records are handed out again if they are read again",
				"partition", ps.p.String(), "err", err)
		}
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

// drop forgets the partition's entries. It returns why records of keys
// done may not be in the log, if a Done round of the partition failed or
// is still in flight.
func (ps *partition) drop() error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.released = true
	ps.m, ps.done, ps.pending, ps.batches, ps.dropBatches, ps.retry = nil, nil, nil, nil, nil, nil
	ps.runs = offRuns{}
	ps.begun, ps.begunRecs = begunSet{}, nil
	var err error
	if len(ps.resend) > 0 {
		err = errors.New("an earlier write failed")
	}
	for _, r := range ps.inflight {
		if !r.over() {
			err = errors.New("still in flight")
		} else if ferr := r.failed(); ferr != nil {
			err = ferr
		}
	}
	ps.inflight, ps.resend = nil, nil
	return err
}

// live returns key's entry unless it is absent or expired; an expired entry
// is dropped and its record queued for deletion. A done key is returned
// with Done and its expiry only. Called with ps.mu held.
func (s *Store) live(ps *partition, key string, now int64) (entry, bool) {
	var h keyHash
	if ps.doneLen() > 0 || ps.begun.len() > 0 {
		h = ps.hash(key)
	}
	return s.liveHashed(ps, key, h, now)
}

// liveHashed is live for a key whose hash the caller has (or whose hash
// is not needed: the zero hash while done and begun are empty).
func (s *Store) liveHashed(ps *partition, key string, h keyHash, now int64) (entry, bool) {
	if !ps.notDone(h) {
		if exp, ok := ps.doneExp(h); ok {
			if exp.live(now) {
				return entry{done: true, expires: exp.nanos()}, true
			}
			s.expired.Add(int64(ps.forgetExpired(h, now)))
		}
	}
	e, ok := ps.m[key]
	if !ok {
		if rec := ps.begun.get(h); rec != nil {
			if rec.expires == 0 || rec.expires > now {
				return entry{attempts: 1, expires: rec.expires}, true
			}
			ps.unbegin(h)
			s.expired.Add(1)
		}
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
	if len(ps.m)+len(ps.done)+len(ps.runs.r) < ps.sweepAt {
		return
	}
	for k, e := range ps.m {
		if e.expires != 0 && e.expires <= now {
			delete(ps.m, k)
			ps.pending[k] = struct{}{}
			s.expired.Add(1)
		}
	}
	for h, exp := range ps.done {
		if !exp.live(now) {
			delete(ps.done, h)
			s.expired.Add(1)
		}
	}
	s.expired.Add(int64(ps.runs.expire(now)))
	for _, rec := range ps.begunRecs {
		if rec.expires != 0 && rec.expires <= now {
			ps.forgetBegun(rec)
			ps.dropBatches[rec.key] = struct{}{}
		}
	}
	for k, exp := range ps.batches {
		if exp != 0 && exp <= now {
			delete(ps.batches, k)
			ps.dropBatches[k] = struct{}{}
		}
	}
	ps.sweepAt = max(minSweep, 2*(len(ps.m)+len(ps.done)+len(ps.runs.r)))
}

// updates are the new entries of one call, in the order of their keys'
// first appearance.
type updates struct {
	asked  []string  // the keys of the call, for Begin's retry
	firsts []keyHash // Begin's keys begun for the first time: written in one begun record
	keys   []string
	first  []bool // keys[i] is one of firsts: no record of its own
	at     map[string]int
	es     []entry
}

func newUpdates(n int) *updates {
	return &updates{keys: make([]string, 0, n), first: make([]bool, 0, n), at: make(map[string]int, n), es: make([]entry, 0, n)}
}

func (u *updates) get(k string) (entry, bool) {
	if i, ok := u.at[k]; ok {
		return u.es[i], true
	}
	return entry{}, false
}

// addFirst adds k, begun for the first time (hash h): its count goes in
// the call's begun record, not a record of its own.
func (u *updates) addFirst(k string, h keyHash, expires int64) {
	u.firsts = append(u.firsts, h)
	u.first[u.set(k, entry{attempts: 1, expires: expires})] = true
}

// set sets k's new entry and returns its index in keys.
func (u *updates) set(k string, e entry) int {
	if i, ok := u.at[k]; ok {
		u.es[i] = e
		return i
	}
	u.at[k] = len(u.keys)
	u.keys = append(u.keys, k)
	u.first = append(u.first, false)
	u.es = append(u.es, e)
	return len(u.keys) - 1
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
		if e, ok := s.live(ps, k, now); ok && !e.done {
			recs = append(recs, ps.record(k, e))
			repairs = append(repairs, repair{k, false})
		} else {
			// Gone, or done: the hash holds it, its record goes.
			recs = append(recs, ps.tombstone(recordKey(k)))
			repairs = append(repairs, repair{k, true})
		}
	}
	var dropped []string
	for k := range ps.dropBatches {
		if len(repairs)+len(dropped) >= maxRepairs {
			break
		}
		recs = append(recs, ps.tombstone([]byte(k)))
		dropped = append(dropped, k)
	}
	// Records of Done rounds that failed go first, again, and are folded
	// as extra records are (they were folded when produced, and folding
	// them twice changes nothing).
	resent := len(ps.resend)
	if resent > 0 {
		extra = append(again(ps.resend), extra...)
	}
	recs = append(recs, extra...)
	if u != nil {
		for i, k := range u.keys {
			if !u.first[i] {
				recs = append(recs, ps.record(k, u.es[i]))
			}
		}
	}
	if len(recs) == 0 && len(ps.inflight) == 0 {
		return nil
	}
	// Ours are sent at once, with the Done rounds lingering before them in
	// the same request; the rounds, acknowledged first, are then taken off.
	var err error
	if len(recs) > 0 {
		err = s.producer(ps.p.Partition).ProduceSync(ctx, recs...).FirstErr()
	}
	landed, prevErr := ps.settle(ctx)
	if err == nil && prevErr != nil {
		err = fmt.Errorf("an earlier Done: %w", prevErr)
	}
	if err != nil {
		// Some records may have landed: the next write finds them in
		// the gap before its own and reads them back. Those of a failed
		// Done round are in ps.resend, for the next write.
		return closedOr(fmt.Errorf("kafkastore: writing %v to %s: %w", ps.p, ps.changelog, err))
	}
	if resent > 0 {
		ps.resend = nil
	}
	all := append(landed, recs...)
	if len(all) == 0 {
		return nil
	}
	lo, hi := all[0].Offset, all[0].Offset
	for _, r := range all[1:] {
		lo, hi = min(lo, r.Offset), max(hi, r.Offset)
	}
	if lo == ps.next && hi-lo+1 == int64(len(all)) {
		for _, r := range repairs {
			delete(ps.pending, r.key)
		}
		for _, k := range dropped {
			delete(ps.dropBatches, k)
			delete(ps.batches, k)
		}
		for _, r := range extra {
			if kind := hashSetKind(r.Key); kind != 0 && r.Value != nil {
				s.foldHashes(ps, r, kind, now, true)
			} else {
				s.fold(ps, r, now, nil)
			}
		}
		if u != nil {
			for i, k := range u.keys {
				if u.first[i] {
					continue // folded from the begun record above
				}
				if ps.begun.len() > 0 {
					ps.unbegin(ps.hash(k))
				}
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
