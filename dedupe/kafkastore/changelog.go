package kafkastore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// changelog is an input topic's changelog topic.
type changelog struct {
	name       string
	partitions int
}

// cleanupPolicy is the topic config the store sets on the changelogs it
// creates. (kfake accepts any config name, so a misspelt one would pass the
// embedded tests: keep it in this one place, checked against a real broker.)
const cleanupPolicy = "cleanup.policy"

// changelog returns the changelog of input, creating it (compacted, with
// input's partition count) if it does not exist.
func (s *Store) changelog(ctx context.Context, input string) (changelog, error) {
	s.topicMu.Lock()
	defer s.topicMu.Unlock()
	if c, ok := s.topics[input]; ok {
		return c, nil
	}
	name := s.opts.TopicName(input)
	if name == "" || name == input {
		return changelog{}, fmt.Errorf("kafkastore: TopicName(%q) = %q: the changelog needs a topic of its own", input, name)
	}
	counts, err := s.partitionCounts(ctx, input, name)
	if err != nil {
		return changelog{}, fmt.Errorf("kafkastore: looking up topics %q and %q: %w", input, name, err)
	}
	in := counts[input]
	if in.err != nil {
		return changelog{}, fmt.Errorf("kafkastore: input topic %q: %w", input, in.err)
	}
	want := in.partitions
	c := changelog{name: name, partitions: want}
	cd := counts[name]
	switch {
	case cd.err == nil:
		if err := s.checkChangelog(ctx, c, input, cd.partitions); err != nil {
			return changelog{}, err
		}
	case errors.Is(cd.err, kerr.UnknownTopicOrPartition):
		_, err := s.adm.CreateTopic(ctx, int32(want), s.opts.ReplicationFactor,
			map[string]*string{cleanupPolicy: kadm.StringPtr("compact")}, name)
		switch {
		case errors.Is(err, kerr.TopicAlreadyExists):
			// Another member created it first: check what it made.
			have, err := s.partitionCount(ctx, name)
			if err != nil {
				return changelog{}, fmt.Errorf("kafkastore: looking up changelog topic %q: %w", name, err)
			}
			if err := s.checkChangelog(ctx, c, input, have); err != nil {
				return changelog{}, err
			}
		case err != nil:
			return changelog{}, fmt.Errorf("kafkastore: creating changelog topic %q: %w", name, err)
		}
	default:
		return changelog{}, fmt.Errorf("kafkastore: changelog topic %q: %w", name, cd.err)
	}
	s.topics[input] = c
	return c, nil
}

// topicCount is a topic's partition count, or why it is unknown.
type topicCount struct {
	partitions int
	err        error
}

// partitionCounts looks topics up with a Metadata request of its own. (Not
// kadm's ListTopics: it goes through kgo's RequestCachedMetadata, which
// keeps a topic's metadata, "unknown" included, for MetadataMinAge, 5s by
// default, so a changelog another member has just created would stay
// unknown that long.)
func (s *Store) partitionCounts(ctx context.Context, topics ...string) (map[string]topicCount, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, s.cl)
	if err != nil {
		return nil, err
	}
	out := make(map[string]topicCount, len(topics))
	for _, t := range topics {
		out[t] = topicCount{err: kerr.UnknownTopicOrPartition}
	}
	for _, rt := range resp.Topics {
		if rt.Topic == nil {
			continue
		}
		out[*rt.Topic] = topicCount{partitions: len(rt.Partitions), err: kerr.ErrorForCode(rt.ErrorCode)}
	}
	return out, nil
}

// partitionCount returns the partition count of a topic that exists but
// may not show in metadata yet: it was just created by someone else, and
// the brokers learn of it a little after the controller answered.
func (s *Store) partitionCount(ctx context.Context, topic string) (int, error) {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		counts, err := s.partitionCounts(ctx, topic)
		if err == nil {
			err = counts[topic].err
		}
		if err == nil {
			return counts[topic].partitions, nil
		}
		if attempt == 10 || !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return 0, err
		}
		if !sleepCtx(ctx, backoff) {
			return 0, ctx.Err()
		}
		backoff = min(2*backoff, time.Second)
	}
}

// checkChangelog refuses an existing changelog whose partition count is not
// the input's, and warns when it is not compacted.
func (s *Store) checkChangelog(ctx context.Context, c changelog, input string, have int) error {
	if have != c.partitions {
		return &PartitionCountError{Changelog: c.name, ChangelogPartitions: have, Input: input, InputPartitions: c.partitions}
	}
	rcs, err := s.adm.DescribeTopicConfigs(ctx, c.name)
	if err != nil {
		s.opts.Logger.Warn("kafkastore: cannot check the changelog's cleanup policy", "topic", c.name, "err", err)
		return nil
	}
	rc, err := rcs.On(c.name, nil)
	if err != nil || rc.Err != nil {
		s.opts.Logger.Warn("kafkastore: cannot check the changelog's cleanup policy", "topic", c.name, "err", errors.Join(err, rc.Err))
		return nil
	}
	for _, cfg := range rc.Configs {
		if cfg.Key == cleanupPolicy && (cfg.Value == nil || !strings.Contains(*cfg.Value, "compact")) {
			s.opts.Logger.Warn("kafkastore: the changelog topic is not compacted: its entries are deleted by time or size, not kept per key",
				"topic", c.name, cleanupPolicy, cfg.MaybeValue())
		}
	}
	return nil
}

// read folds the records of changelog partition ps.p into ps, from offset
// from (-1: the partition's start) through offset through, which must hold
// a record: reading stops when it is reached. Records past it are not
// folded. Called with ps.mu held.
//
// It fetches from the partition's leader through the store's own client,
// one partition per request. A client made for each read fetched the
// metadata of every partition of the changelog first: a member assigned
// 1024 partitions made 1024 clients and read the metadata of 1024
// partitions 1024 times, gigabytes of allocations for one rebalance.
func (s *Store) read(ctx context.Context, ps *partition, from, through, now int64, claims map[string]int64) error {
	offset := max(from, 0)
	leader, id := int32(-1), [16]byte{}
	for tries := 0; ; {
		if leader < 0 {
			var err error
			if leader, id, err = s.leaderOf(ctx, ps.changelog, ps.p.Partition); err != nil {
				return err
			}
		}
		rp, err := s.fetchOne(ctx, leader, ps.changelog, id, ps.p.Partition, offset)
		if err == nil {
			err = kerr.ErrorForCode(rp.ErrorCode)
		}
		switch {
		case err == nil:
		case errors.Is(err, kerr.OffsetOutOfRange) && rp.LogStartOffset > offset:
			// Deleted from the log's start, as a reader that resets to
			// the start reads it: from what is left.
			offset = rp.LogStartOffset
			continue
		case ctx.Err() == nil && (kerr.IsRetriable(err) || errors.Is(err, kerr.UnknownTopicID) || !isKafkaError(err)) && tries < readTries:
			// A moved leader, a broker restarting, a connection lost:
			// look up the leader again and fetch again.
			tries++
			leader = -1
			s.forgetLeaders(ps.changelog)
			if !sleepCtx(ctx, time.Duration(tries)*100*time.Millisecond) {
				return ctx.Err()
			}
			continue
		default:
			return err
		}
		tries = 0
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
			Topic: ps.changelog, Partition: ps.p.Partition, Offset: offset,
		}, rp, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil && !errors.Is(fp.Err, kerr.ErrorForCode(rp.ErrorCode)) {
			return fp.Err
		}
		for _, r := range fp.Records {
			if r.Offset < from {
				continue
			}
			if r.Offset > through {
				return nil
			}
			s.apply(ps, r, now, claims)
			if r.Offset == through {
				return nil
			}
		}
		if next > offset {
			offset = next
		}
		if offset > through {
			return nil // through was compacted away meanwhile: all before it is folded
		}
	}
}

// readTries bounds the fetches of a read that fail in a row with an error
// a new leader lookup may cure.
const readTries = 10

// isKafkaError reports whether err is an error code of the Kafka protocol
// (rather than a failed connection or request).
func isKafkaError(err error) bool {
	var ke *kerr.Error
	return errors.As(err, &ke)
}

// sleepCtx waits d, or until ctx ends: it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// fetchOne fetches partition of topic (whose topic ID is id) from offset
// on, from broker leader, and returns the partition's part of the
// response.
func (s *Store) fetchOne(ctx context.Context, leader int32, topic string, id [16]byte, partition int32, offset int64) (*kmsg.FetchResponseTopicPartition, error) {
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = 500
	req.MinBytes = 1
	req.MaxBytes = readMaxBytes
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, id
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = partition
	rp.FetchOffset = offset
	rp.PartitionMaxBytes = readMaxBytes
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, s.cl.Broker(int(leader)))
	if err != nil {
		return nil, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, err
	}
	for i := range resp.Topics {
		t := &resp.Topics[i]
		if t.Topic != topic && t.TopicID != id {
			continue
		}
		for j := range t.Partitions {
			if t.Partitions[j].Partition == partition {
				return &t.Partitions[j], nil
			}
		}
	}
	return nil, fmt.Errorf("fetch response without %s/%d", topic, partition)
}

// readMaxBytes bounds one fetch of a read. A broker returns a record batch
// larger than it whole when it is the first one (KIP-74).
const readMaxBytes = 8 << 20

// apply folds one changelog record into ps by the log-order fencing rule:
// an owner's epoch is the offset of its claim record, every record carries
// its writer's epoch, and a record whose epoch is below the highest epoch
// seen before it in the log was written by a zombie after a later owner
// claimed the partition: it is ignored, and its key queued for a rewrite so
// that compaction does not keep the zombie's record as the key's last.
//
// A claim counts only if its writer had seen the latest claim before it:
// its base (the end offset its writer read before writing it) is above
// that claim's offset. A claim that lands after one its writer did not see
// (it was in flight while its member lost the partition, or two members
// claimed at once) is ignored: it fences nobody.
//
// claims, when not nil, collects the claim keys seen and their times.
// Called with ps.mu held.
func (s *Store) apply(ps *partition, r *kgo.Record, now int64, claims map[string]int64) {
	s.records.Add(1)
	s.fold(ps, r, now, claims)
}

// fold is apply without the count of records read: the store's own writes
// are folded in with it when nobody wrote in between.
func (s *Store) fold(ps *partition, r *kgo.Record, now int64, claims map[string]int64) {
	if kind := hashSetKind(r.Key); kind != 0 {
		s.foldHashes(ps, r, kind, now, false)
		return
	}
	key, isClaim, err := parseKey(r.Key)
	if err != nil {
		s.skipMalformed(ps, r, err)
		return
	}
	if r.Value == nil {
		epoch, err := tombstoneEpoch(r)
		if err == nil && epoch >= r.Offset {
			// As for entries: an owner's epoch is the offset of its claim,
			// before all its records. Read as it is, a later epoch would
			// fence every owner after it.
			err = fmt.Errorf("tombstone epoch %d is not before the record's offset", epoch)
		}
		if err != nil {
			s.skipMalformed(ps, r, err)
			return
		}
		if ps.stale(epoch) {
			s.fenced.Add(1)
			if !isClaim {
				ps.pending[key] = struct{}{}
			}
			return
		}
		ps.cur = epoch
		if isClaim {
			if claims != nil {
				delete(claims, string(r.Key))
			}
			return
		}
		delete(ps.m, key)
		delete(ps.pending, key)
		return
	}
	if isClaim {
		at, err := decodeClaim(r.Value)
		var base int64
		var hasBase bool
		if err == nil {
			base, hasBase, err = headerInt(r, baseHeader)
		}
		if err != nil {
			s.skipMalformed(ps, r, err)
			return
		}
		if claims != nil {
			claims[string(r.Key)] = at
		}
		if !hasBase || base > r.Offset {
			base = r.Offset // written before bases: it saw everything before it
		}
		if ps.claimed && base <= ps.cur {
			// Its writer did not see the latest claim: void, and so is
			// every record written under it.
			s.fenced.Add(1)
			ps.void[r.Offset] = struct{}{}
			return
		}
		ps.cur = max(ps.cur, r.Offset)
		ps.claimed = true
		return
	}
	epoch, e, err := decodeEntry(r.Value)
	if err == nil && epoch >= r.Offset {
		err = fmt.Errorf("epoch %d is not before the record's offset", epoch)
	}
	if err != nil {
		s.skipMalformed(ps, r, err)
		return
	}
	if ps.stale(epoch) {
		s.fenced.Add(1)
		ps.pending[key] = struct{}{}
		return
	}
	ps.cur = epoch
	if e.expires != 0 && e.expires <= now {
		s.expired.Add(1)
		delete(ps.m, key)
		ps.pending[key] = struct{}{} // to delete it from the log
		return
	}
	if e.done {
		// A done key keeps only its expiry (written by the Done of an
		// earlier version, or by this one's Mark of a done key).
		delete(ps.m, key)
		ps.pending[key] = struct{}{} // its record goes: the hash says done
		h := ps.hash(key)
		ps.unbegin(h)
		ps.setDone(h, e.expires)
		s.bound(ps)
		return
	}
	if ps.begun.len() > 0 {
		ps.unbegin(ps.hash(key)) // its own record holds it now
	}
	ps.m[key] = e
	delete(ps.pending, key)
}

// foldHashes folds a record of keys done, or of keys begun for the first
// time, in one call into ps. own says the record is this store's write,
// folded right after it landed or, for a Done, right after it was
// produced: its Begin handed out no key done, so that is not looked up
// again, and its offset may not be known yet.
func (s *Store) foldHashes(ps *partition, r *kgo.Record, kind byte, now int64, own bool) {
	k := string(r.Key)
	if r.Value == nil {
		epoch, err := tombstoneEpoch(r)
		if err == nil && epoch >= r.Offset {
			err = fmt.Errorf("tombstone epoch %d is not before the record's offset", epoch)
		}
		if err != nil {
			s.skipMalformed(ps, r, err)
			return
		}
		if ps.stale(epoch) {
			s.fenced.Add(1)
			return
		}
		ps.cur = epoch
		delete(ps.batches, k)
		delete(ps.dropBatches, k)
		if rec := ps.begunRecs[k]; rec != nil {
			ps.forgetBegun(rec)
		}
		return
	}
	runs := len(r.Value) >= 2 && r.Value[0] == valueVersion && r.Value[1] == kindRuns
	var epoch, expires int64
	var fnv uint64
	var err error
	if runs {
		epoch, expires, fnv, err = decodeRuns(r.Value, nil)
	} else {
		epoch, expires, err = decodeHashes(r.Value, kind, nil)
	}
	if err == nil && !own && epoch >= r.Offset {
		// (Own records are folded before they land too: see Done.)
		err = fmt.Errorf("epoch %d is not before the record's offset", epoch)
	}
	if err != nil {
		s.skipMalformed(ps, r, err)
		return
	}
	if stale := ps.stale(epoch); stale || (expires != 0 && expires <= now) {
		if stale {
			s.fenced.Add(1)
		} else {
			s.expired.Add(1)
		}
		ps.dropBatches[k] = struct{}{} // nobody needs it: delete it from the log
		return
	}
	ps.cur = epoch
	if runs && kind == kindBegun {
		s.foldBegunRuns(ps, r, expires, fnv, now, own)
		return
	}
	if runs {
		ps.batches[k] = expires
		if fnv == ps.offFNV { // else another partition's, whose keys are never asked of this one
			_, _, _, _ = decodeRuns(r.Value, func(lo, hi uint64) { ps.doneRange(lo, hi, expires) })
			s.bound(ps)
		}
		return
	}
	if kind == kindDone {
		ps.batches[k] = expires
		_, _, _ = decodeHashes(r.Value, kind, func(h keyHash) {
			ps.unbegin(h)
			ps.setDone(h, expires)
		})
		s.bound(ps)
		return
	}
	rec := &begunRec{key: k, expires: expires}
	ps.begunRecs[k] = rec
	_, _, _ = decodeHashes(r.Value, kind, func(h keyHash) { ps.foldBegun(rec, h, now, own) })
	if rec.left == 0 {
		delete(ps.begunRecs, k)
		ps.dropBatches[k] = struct{}{}
	}
}

// foldBegun holds the key h as begun in rec, unless it is done (in a
// record read from the log: one of ours is of keys not done).
func (ps *partition) foldBegun(rec *begunRec, h keyHash, now int64, own bool) {
	if !own && !ps.notDone(h) {
		if exp, done := ps.doneExp(h); done && exp.live(now) {
			return
		}
	}
	ps.unbegin(h)
	ps.begun.add(h, rec)
	rec.left++
}

// foldBegunRuns folds a begun record of the partition's fallback keys as
// runs of offsets (BeginOffsets' record of a first delivery).
func (s *Store) foldBegunRuns(ps *partition, r *kgo.Record, expires int64, fnv uint64, now int64, own bool) {
	k := string(r.Key)
	rec := &begunRec{key: k, expires: expires}
	ps.begunRecs[k] = rec
	if fnv == ps.offFNV { // else another partition's, whose keys are never asked of this one
		_, _, _, _ = decodeRuns(r.Value, func(lo, hi uint64) {
			if own && ps.begun.addRange(lo, hi, rec) {
				rec.left += int(hi - lo + 1)
				return
			}
			for o := lo; ; o++ {
				ps.foldBegun(rec, ps.offHash(o), now, own)
				if o == hi {
					break
				}
			}
		})
	}
	if rec.left == 0 {
		delete(ps.begunRecs, k)
		ps.dropBatches[k] = struct{}{}
	}
}

func (s *Store) skipMalformed(ps *partition, r *kgo.Record, err error) {
	s.malformed.Add(1)
	s.opts.Logger.Warn("kafkastore: malformed changelog record skipped",
		"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
}

// newClaimKey returns a changelog key for a new owner claim.
func newClaimKey() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return claimPrefix + hex.EncodeToString(b[:])
}
