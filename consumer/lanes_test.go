package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// produceLaneKeys writes n records, record i with key keyOf(i) and value i.
func produceLaneKeys(t *testing.T, brokers []string, topic string, n int, keyOf func(i int) string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Key: []byte(keyOf(i)), Value: []byte(strconv.Itoa(i))}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// keyLedger records, across every member of a test group, the offsets each
// key's records were handled in, in handling order, and how many handler
// calls ran at once.
type keyLedger struct {
	mu       sync.Mutex
	seq      map[string][]int64 // key -> offsets in handling order
	times    map[[2]int64]int   // partition, offset -> handlings
	distinct atomic.Int64
	running  atomic.Int64
	peak     atomic.Int64
}

func newKeyLedger() *keyLedger {
	return &keyLedger{seq: map[string][]int64{}, times: map[[2]int64]int{}}
}

// enter and leave bracket a handler call.
func (l *keyLedger) enter() {
	n := l.running.Add(1)
	for p := l.peak.Load(); n > p && !l.peak.CompareAndSwap(p, n); p = l.peak.Load() {
	}
}

func (l *keyLedger) leave() { l.running.Add(-1) }

func (l *keyLedger) add(r *kgo.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := fmt.Sprintf("%d/%s", r.Partition, r.Key)
	l.seq[k] = append(l.seq[k], r.Offset)
	id := [2]int64{int64(r.Partition), r.Offset}
	l.times[id]++
	if l.times[id] == 1 {
		l.distinct.Add(1)
	}
}

// check returns the records never handled, handled more than once, and the
// per-key order violations (a record handled after a later one of its key).
func (l *keyLedger) check(end map[int32]int64) (lost, dups, disorder int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, offs := range l.seq {
		for i := 1; i < len(offs); i++ {
			if offs[i] <= offs[i-1] {
				disorder++
			}
		}
	}
	for p, e := range end {
		for o := int64(0); o < e; o++ {
			switch n := l.times[[2]int64{int64(p), o}]; {
			case n == 0:
				lost++
			case n > 1:
				dups += n - 1
			}
		}
	}
	return lost, dups, disorder
}

// Guards the ByKey ordering: with many keys, random handler latencies and
// members joining and leaving (revokes drain every lane, then commit), the
// records of each key are handled in offset order, none is lost or handled
// twice, keys really run in parallel, and the group ends committed at the
// end offsets.
func TestByKeyKeepsEachKeysOrderAcrossRebalances(t *testing.T) {
	const n, parts, keys = 20000, 4, 300
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	produceLaneKeys(t, brokers, topic, n, func(i int) string { return "k" + strconv.Itoa(i%keys) })
	group := kafkatest.NewGroup(t)
	cfg := baseConfig(t, topic, group)
	cfg.Ordering, cfg.Concurrency = ByKey, 16
	l := newKeyLedger()
	h := func(ctx context.Context, b *Batch) error {
		l.enter()
		defer l.leave()
		for _, r := range b.Records {
			l.add(r)
		}
		time.Sleep(time.Duration(rand.IntN(800)) * time.Microsecond)
		return nil
	}
	m1 := startMember(t, cfg, h)
	waitUntil(t, 60*time.Second, "a third of the records", func() bool { return l.distinct.Load() >= n/3 })
	m2 := startMember(t, cfg, h)
	waitUntil(t, 60*time.Second, "m2 to own partitions", func() bool { return len(m2.c.Assigned()) > 0 })
	waitUntil(t, 60*time.Second, "two thirds of the records", func() bool { return l.distinct.Load() >= 2*n/3 })
	if err := m1.stop(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 90*time.Second, "all records", func() bool { return l.distinct.Load() >= n })
	if err := m2.stop(); err != nil {
		t.Fatal(err)
	}
	end := kafkatest.EndOffsets(t, brokers, topic)
	if lost, dups, disorder := l.check(end); lost != 0 || dups != 0 || disorder != 0 {
		t.Fatalf("lost %d, duplicates %d, per-key order violations %d", lost, dups, disorder)
	}
	if p := l.peak.Load(); p < 4 {
		t.Fatalf("at most %d handler calls ran at once: keys were not handled in parallel", p)
	}
	committed := kafkatest.CommittedOffsets(t, brokers, group, topic)
	for p, e := range end {
		if committed[p] != e {
			t.Errorf("partition %d committed at %d, end offset %d", p, committed[p], e)
		}
	}
}

// Guards the poison rule of ByKey: a record that keeps failing holds back the
// later records of its key, and only them: every other key is handled, and
// the commit stays below the failing record.
func TestByKeyFailingRecordHoldsBackOnlyItsKey(t *testing.T) {
	const n, keys, poison = 2000, 10, 105 // offset 105 has key k5
	brokers, topic, cfg := onePartition(t, n, func(t *testing.T, brokers []string, topic string, n int) {
		produceLaneKeys(t, brokers, topic, n, func(i int) string { return "k" + strconv.Itoa(i%keys) })
	})
	cfg.Ordering, cfg.Concurrency = ByKey, 4
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	l := newKeyLedger()
	var poisonTries atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		for i, r := range b.Records {
			if r.Offset == poison {
				poisonTries.Add(1)
				return FailedAt(i, errors.New("poison"))
			}
			l.add(r)
		}
		return nil
	})
	waitUntil(t, 60*time.Second, "every record of the other keys", func() bool { return l.distinct.Load() >= n-n/keys })
	waitUntil(t, 10*time.Second, "retries of the poison record", func() bool { return poisonTries.Load() >= 5 })
	time.Sleep(50 * time.Millisecond) // a later record of k5 passing would show up by now
	l.mu.Lock()
	k5 := append([]int64(nil), l.seq["0/k5"]...)
	l.mu.Unlock()
	for _, o := range k5 {
		if o > poison {
			t.Fatalf("record %d of k5 handled while %d fails: it passed the failing record", o, poison)
		}
	}
	if got := len(k5); got != poison/keys {
		t.Fatalf("%d records of k5 handled, want the %d before the failing one", got, poison/keys)
	}
	if c := kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0]; c != poison {
		t.Fatalf("committed %d, want the failing record's offset %d", c, poison)
	}
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
}

// Guards the dead-letter topic with ByKey: a permanently failing record goes
// to the dead-letter topic, and only then are the later records of its key
// handled; the partition is committed to the end.
func TestByKeyPermanentFailureIsDeadLetteredThenItsKeyGoesOn(t *testing.T) {
	const n, keys, poison = 1000, 10, 105
	brokers, topic, cfg := onePartition(t, n, func(t *testing.T, brokers []string, topic string, n int) {
		produceLaneKeys(t, brokers, topic, n, func(i int) string { return "k" + strconv.Itoa(i%keys) })
	})
	cfg.Ordering, cfg.Concurrency = ByKey, 4
	cfg.DeadLetter = &DeadLetter{}
	cfg.Commit = offsets.Policy{Interval: 10 * time.Millisecond}
	l := newKeyLedger()
	var dlqBeforeLater atomic.Bool
	var failed atomic.Bool
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		for i, r := range b.Records {
			if r.Offset == poison {
				failed.Store(true)
				return FailedAt(i, Permanent(errors.New("poison")))
			}
			if string(r.Key) == "k5" && r.Offset > poison && !failed.Load() {
				dlqBeforeLater.Store(true)
			}
			l.add(r)
		}
		return nil
	})
	waitUntil(t, 60*time.Second, "the commit to the end", func() bool {
		return kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0] == n
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if dlqBeforeLater.Load() {
		t.Fatal("a later record of the failing key was handled before the failing one was dead-lettered")
	}
	if l.distinct.Load() != n-1 {
		t.Fatalf("%d records handled, want %d", l.distinct.Load(), n-1)
	}
	dlq := readAll(t, brokers, topic+".dlq", 1, 10*time.Second)
	if len(dlq) != 1 || header(dlq[0], HeaderSourceOffset) != strconv.Itoa(poison) {
		t.Fatalf("dead-letter records = %d, want the one at %d", len(dlq), poison)
	}
	if _, _, disorder := l.check(nil); disorder != 0 {
		t.Fatalf("%d per-key order violations", disorder)
	}
}

// committedMeta reads the group's committed offset and metadata of partition 0.
func committedMeta(t *testing.T, brokers []string, group, topic string) (int64, string) {
	t.Helper()
	resp, err := kafkatest.Admin(t, brokers).FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := resp.Lookup(topic, 0)
	if !ok {
		return -1, ""
	}
	return o.At, o.Metadata
}

// Guards the restart after out-of-order completion, and the metadata limit
// on a real broker: records of one key stuck behind a failing record every
// other offset leave a completion pattern too sparse for 4096 bytes. The
// commit on close still succeeds (the metadata cut to what fits, never a
// refused commit), and the next member skips exactly the records the
// metadata names and handles all the others, the stuck key's in order.
func TestByKeyRestartSkipsWhatTheMetadataNamesEvenOverTheLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		cut   bool
		keyOf func(i int) string
	}{
		// Every odd offset is key "stuck", the first of them (1) fails.
		{"sparse over the limit", 8000, true, func(i int) string {
			if i%2 == 1 {
				return "stuck"
			}
			return "k" + strconv.Itoa(i)
		}},
		// One stuck key among 50 keys: few ranges, all named.
		{"within the limit", 2000, false, func(i int) string {
			if i%50 == 1 {
				return "stuck"
			}
			return "k" + strconv.Itoa(i%50)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			brokers, topic, cfg := onePartition(t, tc.n, func(t *testing.T, brokers []string, topic string, n int) {
				produceLaneKeys(t, brokers, topic, n, tc.keyOf)
			})
			cfg.Ordering, cfg.Concurrency = ByKey, 8
			cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
			stuck := 0
			for i := range tc.n {
				if tc.keyOf(i) == "stuck" {
					stuck++
				}
			}
			first := newKeyLedger()
			m1 := startMember(t, cfg, func(_ context.Context, b *Batch) error {
				for i, r := range b.Records {
					if r.Offset == 1 {
						return FailedAt(i, errors.New("not yet"))
					}
					first.add(r)
				}
				return nil
			})
			waitUntil(t, 60*time.Second, "every record not stuck", func() bool { return first.distinct.Load() >= int64(tc.n-stuck) })
			if err := m1.stop(); err != nil {
				t.Fatal(err)
			}
			s := m1.c.Stats()
			if s.CommitErrors != 0 {
				t.Fatalf("%d commit errors: the metadata made a commit fail", s.CommitErrors)
			}
			at, meta := committedMeta(t, brokers, cfg.Group, topic)
			if at != 1 {
				t.Fatalf("committed %d, want 1 (the failing record)", at)
			}
			if len(meta) > offsets.MaxMetadata {
				t.Fatalf("committed metadata of %d bytes", len(meta))
			}
			named, err := offsets.DecodeCompleted(at, meta)
			if err != nil || len(named) == 0 {
				t.Fatalf("committed metadata %.40q: %v ranges, %v", meta, len(named), err)
			}
			skip := map[int64]bool{}
			for _, r := range named {
				for o := r.First; o <= r.Last; o++ {
					skip[o] = true
				}
			}
			if (len(skip) < tc.n-stuck-1) != tc.cut {
				t.Fatalf("metadata names %d of the %d records completed beyond the watermark (cut expected: %v)", len(skip), tc.n-stuck-1, tc.cut)
			}

			second := newKeyLedger()
			m2 := startMember(t, cfg, func(_ context.Context, b *Batch) error {
				for _, r := range b.Records {
					second.add(r)
				}
				return nil
			})
			want := int64(tc.n-1) - int64(len(skip))
			waitUntil(t, 60*time.Second, "the records not named", func() bool { return second.distinct.Load() >= want })
			waitUntil(t, 30*time.Second, "the commit to the end", func() bool {
				at, _ := committedMeta(t, brokers, cfg.Group, topic)
				return at == int64(tc.n)
			})
			if err := m2.stop(); err != nil {
				t.Fatal(err)
			}
			second.mu.Lock()
			defer second.mu.Unlock()
			for id, times := range second.times {
				if skip[id[1]] {
					t.Fatalf("offset %d handled again though the metadata names it", id[1])
				}
				if times != 1 {
					t.Fatalf("offset %d handled %d times", id[1], times)
				}
			}
			if int64(len(second.times)) != want {
				t.Fatalf("second member handled %d records, want %d", len(second.times), want)
			}
			for _, offs := range second.seq {
				for i := 1; i < len(offs); i++ {
					if offs[i] <= offs[i-1] {
						t.Fatalf("per-key order violated: %d after %d", offs[i], offs[i-1])
					}
				}
			}
		})
	}
}

// Guards the configuration of the orderings: each invalid combination is
// refused by New naming the field.
func TestNewRefusesInvalidOrderingNamingTheField(t *testing.T) {
	process := func(context.Context, *kgo.Record) (any, error) { return nil, nil }
	for _, tc := range []struct {
		name  string
		set   func(*Config)
		field string
	}{
		{"an unknown ordering", func(c *Config) { c.Ordering = 7 }, "Ordering"},
		{"a negative concurrency", func(c *Config) { c.Ordering, c.Concurrency = ByKey, -1 }, "Concurrency"},
		{"concurrency with partition order", func(c *Config) { c.Concurrency = 4 }, "Concurrency"},
		{"Resequence without Process", func(c *Config) { c.Ordering = Resequence }, "Process"},
		{"Process without Resequence", func(c *Config) { c.Ordering, c.Process = ByKey, process }, "Process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Brokers: []string{"127.0.0.1:1"}, Group: "g", Topics: []string{"t"}}
			tc.set(&cfg)
			_, err := New(cfg, func(context.Context, *Batch) error { return nil })
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("got %v, want a ConfigError for %s", err, tc.field)
			}
		})
	}
}

// Guards a broker with a lower offset.metadata.max.bytes than kbatch's 4096:
// a commit refused with OFFSET_METADATA_TOO_LARGE is sent again at once
// without metadata, so the watermark is still committed and no commit error
// is left; the records beyond it are then handled again after a restart.
func TestCommitRefusedForItsMetadataIsSentWithout(t *testing.T) {
	const n, limit = 400, 40
	topic := "meta-limit"
	cluster, brokers := embeddedTopics(t, topic)
	produceLaneKeys(t, brokers, topic, n, func(i int) string {
		if i%2 == 1 {
			return "stuck"
		}
		return "k" + strconv.Itoa(i)
	})
	var refused atomic.Int64
	cluster.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		tooLarge := false
		for _, rt := range r.Topics {
			for _, rp := range rt.Partitions {
				if rp.Metadata != nil && len(*rp.Metadata) > limit {
					tooLarge = true
				}
			}
		}
		if !tooLarge {
			return nil, nil, false
		}
		refused.Add(1)
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.OffsetMetadataTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	cfg := baseConfig(t, topic, "meta-limit-group")
	cfg.Brokers = brokers
	cfg.Ordering, cfg.Concurrency = ByKey, 4
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	var handled atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		for i, r := range b.Records {
			if r.Offset == 1 {
				return FailedAt(i, errors.New("not yet"))
			}
			handled.Add(1)
		}
		return nil
	})
	waitUntil(t, 30*time.Second, "every record not stuck", func() bool { return handled.Load() >= n/2 })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if refused.Load() == 0 {
		t.Fatal("no commit carried metadata over the limit: the test tests nothing")
	}
	if s := m.c.Stats(); s.CommitErrors != 0 {
		t.Fatalf("%d commit errors", s.CommitErrors)
	}
	// Without kbatch's metadata, kgo commits its member id.
	if at, meta := committedMeta(t, brokers, cfg.Group, topic); at != 1 || strings.HasPrefix(meta, "kbatch:") {
		t.Fatalf("committed %d with metadata %q, want 1 without kbatch's", at, meta)
	}
}

// Guards the restart against metadata kbatch did not write or cannot read:
// it is ignored, never trusted, and every record beyond the committed offset
// is handled.
func TestByKeyIgnoresMetadataItCannotRead(t *testing.T) {
	for _, meta := range []string{"kbatch:1:***", "kbatch:9:AAAA", "written by another client"} {
		t.Run(meta, func(t *testing.T) {
			const n, at = 300, 100
			brokers, topic, cfg := onePartition(t, n, func(t *testing.T, brokers []string, topic string, n int) {
				produceLaneKeys(t, brokers, topic, n, func(i int) string { return "k" + strconv.Itoa(i%7) })
			})
			offs := make(kadm.Offsets)
			offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: at, LeaderEpoch: -1, Metadata: meta})
			if _, err := kafkatest.Admin(t, brokers).CommitOffsets(context.Background(), cfg.Group, offs); err != nil {
				t.Fatal(err)
			}
			cfg.Ordering = ByKey
			l := newKeyLedger()
			m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
				for _, r := range b.Records {
					l.add(r)
				}
				return nil
			})
			waitUntil(t, 30*time.Second, "the records beyond the committed offset", func() bool { return l.distinct.Load() >= n-at })
			if err := m.stop(); err != nil {
				t.Fatal(err)
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			for o := int64(at); o < n; o++ {
				if l.times[[2]int64{0, o}] != 1 {
					t.Fatalf("offset %d handled %d times, want once", o, l.times[[2]int64{0, o}])
				}
			}
			if len(l.times) != n-at {
				t.Fatalf("%d records handled, want %d", len(l.times), n-at)
			}
		})
	}
}

// Guards bounded memory with ByKey: records completed beyond the watermark
// keep their place in the buffer until the watermark passes them, so a key
// stuck behind a failing record stops the partition at the bound (the other
// keys go on until then) instead of growing memory; and every record held is
// given back when the member closes.
func TestByKeyStuckKeyStopsAtTheBufferBound(t *testing.T) {
	const n, bound = 5000, 600
	brokers, topic, cfg := onePartition(t, n, func(t *testing.T, brokers []string, topic string, n int) {
		produceLaneKeys(t, brokers, topic, n, func(i int) string {
			if i%10 == 1 {
				return "stuck"
			}
			return "k" + strconv.Itoa(i%10)
		})
	})
	cfg.Ordering, cfg.Concurrency = ByKey, 8
	cfg.MaxBufferedRecords = bound
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	var handled atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		for i, r := range b.Records {
			if r.Offset == 1 {
				return FailedAt(i, errors.New("not yet"))
			}
			handled.Add(1)
		}
		return nil
	})
	// Records of the other keys are handled while the buffer has room.
	waitUntil(t, 30*time.Second, "the buffer to fill", func() bool { return m.c.Stats().BufferedRecords >= bound*9/10 })
	time.Sleep(300 * time.Millisecond) // the last room in the buffer is used
	settled := handled.Load()
	time.Sleep(300 * time.Millisecond) // more records handled now would mean the bound was passed
	if got := handled.Load(); got != settled || got > bound || got < bound*8/10 {
		t.Fatalf("%d records handled, then %d (bound %d): the partition went past its buffer with a key stuck, or stopped short of it", settled, got, bound)
	}
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	s := m.c.Stats()
	if s.PeakBufferedRecords > bound {
		t.Fatalf("peak %d records held, bound %d", s.PeakBufferedRecords, bound)
	}
	if s.BufferedRecords != 0 || s.BufferedBytes != 0 {
		t.Fatalf("after close %d records / %d bytes still counted as held", s.BufferedRecords, s.BufferedBytes)
	}
	if c := kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0]; c != 1 {
		t.Fatalf("committed %d, want 1", c)
	}
}

// Guards loss with ByKey: when the broker says the member is gone, every
// lane's handler context is cancelled at once and no commit is sent under
// the old member or generation afterwards, not even on close.
func TestByKeyLostPartitionCancelsEveryLaneAndCommitsNothing(t *testing.T) {
	cluster, err := kafkatest.NewEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	const topic, lanes = "lost-lanes", 4
	if _, err := kafkatest.Admin(t, brokers).CreateTopic(context.Background(), 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	produceLaneKeys(t, brokers, topic, 2000, func(i int) string { return "k" + strconv.Itoa(i%50) })
	var (
		mu           sync.Mutex
		lostMember   string
		lostGen      int32
		staleCommits int
	)
	cluster.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		mu.Lock()
		if lostMember != "" && (r.MemberID == lostMember || r.Generation <= lostGen) {
			staleCommits++
		}
		mu.Unlock()
		return nil, nil, false
	})
	var hanging, cancelled atomic.Int64
	cfg := Config{
		Brokers: brokers, Group: "lost-lanes-group", Topics: []string{topic},
		Ordering: ByKey, Concurrency: lanes,
		Commit:     offsets.Policy{EveryRecords: 1 << 30, Interval: time.Hour},
		ClientOpts: []kgo.Opt{kgo.HeartbeatInterval(100 * time.Millisecond)},
	}
	m := startMember(t, cfg, func(ctx context.Context, b *Batch) error {
		hanging.Add(1) // every lane hangs in its first batch until the loss
		<-ctx.Done()
		cancelled.Add(1)
		return ctx.Err()
	})
	waitUntil(t, 20*time.Second, "every lane in its handler", func() bool { return hanging.Load() == lanes })
	member, gen := m.c.cl.GroupMetadata()
	mu.Lock()
	lostMember, lostGen = member, gen
	mu.Unlock()
	cluster.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.HeartbeatRequest)
		if r.MemberID != member {
			return nil, nil, false
		}
		cluster.KeepControl()
		resp := r.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp, nil, true
	})
	waitUntil(t, 20*time.Second, "every lane's context to be cancelled", func() bool { return cancelled.Load() == lanes })
	waitUntil(t, 20*time.Second, "the lost partition to be counted", func() bool { return m.c.Stats().PartitionsLost >= 1 })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if staleCommits != 0 {
		t.Fatalf("%d commits sent under the lost member %s or its generation %d", staleCommits, member, gen)
	}
}

// Guards dedupe with ByKey: attempts are counted per record in the lanes (a
// retried record sees 2), and a second group sharing the store skips every
// record done, without the handler.
func TestByKeyWithDedupeCountsAttemptsAndSkipsDoneRecords(t *testing.T) {
	const n, retried = 1000, 7
	_, _, cfg := onePartition(t, n, func(t *testing.T, brokers []string, topic string, n int) {
		produceLaneKeys(t, brokers, topic, n, func(i int) string { return "k" + strconv.Itoa(i%20) })
	})
	cfg.Ordering, cfg.Concurrency = ByKey, 8
	cfg.Dedupe = &Dedupe{Store: dedupe.NewMemory(dedupe.MemoryOptions{})}
	cfg.Retry = Retry{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	var handled, sawSecond atomic.Int64
	h := func(_ context.Context, b *Batch) error {
		for i, r := range b.Records {
			if r.Offset == retried {
				if b.Attempts(i) == 1 {
					return FailedAt(i, errors.New("once"))
				}
				sawSecond.Store(int64(b.Attempts(i)))
			}
			handled.Add(1)
		}
		return nil
	}
	m := startMember(t, cfg, h)
	waitUntil(t, 30*time.Second, "all records", func() bool { return handled.Load() == n })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if sawSecond.Load() != 2 {
		t.Fatalf("the retried record was handed out with attempts %d, want 2", sawSecond.Load())
	}
	cfg.Group = kafkatest.NewGroup(t)
	m2 := startMember(t, cfg, h)
	waitUntil(t, 30*time.Second, "all records skipped", func() bool { return m2.c.Stats().Skipped == n })
	if err := m2.stop(); err != nil {
		t.Fatal(err)
	}
	if got := handled.Load(); got != n {
		t.Fatalf("handled %d records, want %d: done records were handed out again", got, n)
	}
}

// Guards the latency of the lanes: a ByKey or Resequence batch is cut as
// soon as records are ready and a goroutine is free, never held for MaxWait
// (here an hour), so a slow trickle of records is handled at once.
func TestLanesDoNotWaitForMaxWait(t *testing.T) {
	for _, ord := range []Ordering{ByKey, Resequence} {
		t.Run(ord.String(), func(t *testing.T) {
			const n = 50
			_, _, cfg := onePartition(t, n, func(t *testing.T, brokers []string, topic string, n int) {
				produceLaneKeys(t, brokers, topic, n, func(i int) string { return "k" + strconv.Itoa(i%5) })
			})
			cfg.Ordering, cfg.Concurrency = ord, 4
			cfg.Batch = batcher.Policy{MaxRecords: 1000, MaxWait: time.Hour}
			if ord == Resequence {
				cfg.Process = func(_ context.Context, r *kgo.Record) (any, error) { return nil, nil }
			}
			var handled atomic.Int64
			m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
				if b.Reason != FlushReady {
					return fmt.Errorf("batch cut for %s", b.Reason)
				}
				handled.Add(int64(len(b.Records)))
				return nil
			})
			waitUntil(t, 20*time.Second, "every record, without waiting for MaxWait", func() bool { return handled.Load() == n })
			if err := m.stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
