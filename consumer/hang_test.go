package consumer

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// Guards invariant 7's bound: a handler that ignores its context cannot hold
// Close past DrainTimeout plus a small constant (a 25 s handler used to hold
// it 25 s), and the batch it was given is not committed.
func TestCloseReturnsInTimeWhenAHandlerIgnoresItsContext(t *testing.T) {
	brokers, topic, cfg := onePartition(t, 1000, produce100)
	cfg.DrainTimeout = 500 * time.Millisecond
	cfg.Batch = batcher.Policy{MaxRecords: 100}
	release := make(chan struct{})
	returned := make(chan struct{})
	var batches atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		if batches.Add(1) == 3 {
			<-release // ignores ctx
			close(returned)
		}
		return nil
	})
	defer func() {
		close(release)
		if batches.Load() >= 3 {
			<-returned // the abandoned handler ends before the leak check
		}
	}()
	waitUntil(t, 30*time.Second, "the third batch", func() bool { return batches.Load() >= 3 })
	start := time.Now()
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took > cfg.DrainTimeout+3*time.Second {
		t.Fatalf("Close took %s with DrainTimeout %s", took, cfg.DrainTimeout)
	}
	if s := m.c.Stats(); s.Abandoned != 1 {
		t.Fatalf("Stats.Abandoned = %d, want 1", s.Abandoned)
	}
	if got := kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0]; got != 200 {
		t.Fatalf("committed %d, want 200: the two batches before the stuck one, not the stuck one", got)
	}
}

// Guards invariant 7: Close called from inside a handler (a fatal error)
// used to deadlock, neither Close nor Run returning. Now it starts the stop
// and returns; the handler's batch is drained and committed like any other.
func TestCloseFromInsideAHandlerDoesNotDeadlock(t *testing.T) {
	brokers, topic, cfg := onePartition(t, 1000, produce100)
	cfg.Batch = batcher.Policy{MaxRecords: 100}
	var c *Consumer
	closed := make(chan error, 1)
	var batches atomic.Int64
	c, err := New(cfg, func(_ context.Context, b *Batch) error {
		if batches.Add(1) == 2 {
			closed <- c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(context.Background()) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close from the handler: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close called from the handler did not return")
	}
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(cfg.DrainTimeout + 5*time.Second):
		t.Fatal("Run did not return after Close from a handler")
	}
	if err := c.Close(); err != nil { // a second Close, from outside, after Run returned
		t.Fatal(err)
	}
	if got := kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0]; got < 200 {
		t.Fatalf("committed %d, want at least 200: the batch that called Close completed", got)
	}
}

// Guards invariant 8: a record as large as its source topic accepts, larger
// than kgo's default producer batch limit, used to fail its dead-letter write
// with MESSAGE_TOO_LARGE for ever, stalling the partition. The dead-letter
// topic now takes the source's max.message.bytes and the producer a matching
// limit; the error header is bounded.
func TestDeadLetterTakesTheLargestRecordTheSourceAccepts(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.Name(t, "big")
	maxMsg := "2000000"
	if _, err := kafkatest.Admin(t, brokers).CreateTopic(context.Background(), 1, -1, map[string]*string{"max.message.bytes": &maxMsg}, topic); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 1_500_000)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	p, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerBatchMaxBytes(2_000_000))
	if err != nil {
		t.Fatal(err)
	}
	recs := []*kgo.Record{{Topic: topic, Value: []byte("small")}, {Topic: topic, Value: big}, {Topic: topic, Value: []byte("after")}}
	if err := p.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	p.Close()

	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.DeadLetter = &DeadLetter{}
	cfg.Retry = Retry{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, MaxAttempts: 2}
	longErr := errors.New(strings.Repeat("a very long reason ", 1000))
	var after atomic.Bool
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		for i, r := range b.Records {
			if len(r.Value) > 1000 {
				return FailedAt(i, Permanent(longErr))
			}
			if string(r.Value) == "after" {
				after.Store(true)
			}
		}
		return nil
	})
	dl := readAll(t, brokers, topic+".dlq", 1, 60*time.Second)
	if len(dl[0].Value) != len(big) || string(dl[0].Value[:26]) != string(big[:26]) {
		t.Fatalf("dead-lettered value of %d bytes, want the %d-byte record", len(dl[0].Value), len(big))
	}
	if h := header(dl[0], HeaderError); len(h) > MaxErrorHeader || !strings.HasSuffix(h, "...") {
		t.Fatalf("error header of %d bytes (bound %d): %.40q", len(h), MaxErrorHeader, h)
	}
	waitUntil(t, 30*time.Second, "the record after the big one", after.Load)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if got := kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0]; got != 3 {
		t.Fatalf("committed %d, want 3", got)
	}
	if s := m.c.Stats(); s.Records != 2 || s.DeadLettered != 1 {
		t.Fatalf("Stats.Records %d, DeadLettered %d: want 2 handled and 1 dead-lettered, counted apart", s.Records, s.DeadLettered)
	}
}

// Guards the dead-letter topic on a cluster with ACLs, where a member may
// write to the topic but not create it: Kafka answers CreateTopics with
// TOPIC_AUTHORIZATION_FAILED before "already exists", which used to stop the
// partition for ever. The existing topic is now found through metadata and
// CreateTopics is never sent. Runs on an embedded cluster that refuses
// CreateTopics from the member.
func TestExistingDeadLetterTopicIsUsedWithoutCreate(t *testing.T) {
	const topic = "acl"
	cluster, brokers := embeddedWithDeadLetter(t, topic)
	kafkatest.Produce(t, brokers, topic, 10, value100)
	var creates atomic.Int64
	cluster.ControlKey(int16(kmsg.CreateTopics), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		creates.Add(1)
		r := req.(*kmsg.CreateTopicsRequest)
		resp := r.ResponseKind().(*kmsg.CreateTopicsResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewCreateTopicsResponseTopic()
			st.Topic = rt.Topic
			st.ErrorCode = kerr.TopicAuthorizationFailed.Code
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	cfg := baseConfig(t, topic, "acl-group")
	cfg.Brokers = brokers
	cfg.DeadLetter = &DeadLetter{}
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		return FailedAt(0, Permanent(errors.New("malformed")))
	})
	waitUntil(t, 30*time.Second, "10 records dead-lettered", func() bool { return m.c.Stats().DeadLettered >= 10 })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if n := creates.Load(); n != 0 {
		t.Fatalf("%d CreateTopics requests sent for an existing dead-letter topic", n)
	}
}

// Guards invariant 4: a commit refused as fenced while onRevoked drains
// used to put the revoked partition on the fenced list, and the next session
// restarted a worker (and a dedupe Assign) for a partition this member no
// longer owned. A partition not owned is never restarted.
func TestFencedCommitOfARevokedPartitionDoesNotBringItBack(t *testing.T) {
	c, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Group: "g", Topics: []string{"t"}},
		func(context.Context, *Batch) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tp := offsets.Partition{Topic: "t", Partition: 3}
	// As during a revoke: the worker is already detached when the commit
	// comes back fenced.
	c.onFenced([]offsets.Fenced{{Partition: tp, Resume: 42}})
	c.mu.Lock()
	_, restart := c.fenced[tp]
	c.mu.Unlock()
	if restart {
		t.Fatal("a partition not owned was put on the fenced list: the next session would restart it")
	}
	c.restartFenced(c.fencedToRestart(map[string][]int32{"t": {0}}), 1, nil)
	if got := c.Assigned(); len(got) != 0 {
		t.Fatalf("partitions started after the next session: %v", got)
	}
}

// recordingStore is a dedupe store that records Assign and Release calls.
type recordingStore struct {
	dedupe.Store
	mu    sync.Mutex
	calls []string
}

func (s *recordingStore) Assign(_ context.Context, p offsets.Partition) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "assign")
	return nil
}

func (s *recordingStore) Release(p offsets.Partition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "release")
}

// Guards the dedupe lease: a slow worker of an earlier assignment finishing
// after its successor's Assign used to Release the partition under the
// successor (two separate steps in the old worker's finish). Release by a
// worker that no longer holds the partition is now a no-op, and Assign and
// Release of one partition never interleave.
func TestOldWorkerNeverReleasesAfterItsSuccessorsAssign(t *testing.T) {
	st := &recordingStore{}
	var stats counters
	g := newGate(&Dedupe{Store: st}, &stats)
	c := &Consumer{cfg: Config{Retry: Retry{Initial: time.Millisecond, Max: time.Millisecond}}}
	c.cfg = c.cfg.withDefaults()
	tp := offsets.Partition{Topic: "t", Partition: 0}
	mk := func() *worker {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		return &worker{c: c, tp: tp, ctx: ctx, cancel: cancel, drain: make(chan struct{})}
	}
	old, next := mk(), mk()
	if !g.assign(old) || !g.assign(next) {
		t.Fatal("assign failed")
	}
	g.release(old) // the old worker finishes late
	if got := strings.Join(st.calls, ","); got != "assign,assign" {
		t.Fatalf("store calls %s: the old worker released the successor's partition", got)
	}
	g.release(next)
	if got := strings.Join(st.calls, ","); got != "assign,assign,release" {
		t.Fatalf("store calls %s, want the successor's release", got)
	}
}

// Guards "nothing a worker owns may outlive it": a worker drained normally
// on revoke never had its context cancelled, so every revoked partition left
// its context registered under the consumer's until Run returned (+206 KiB
// after 1,920 revokes). The handler's context must be done once its
// partition is revoked, while the member runs on.
func TestRevokedWorkerContextIsReleased(t *testing.T) {
	const n, parts = 4000, 4
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, parts)
	if err := kafkatest.ProduceN(context.Background(), brokers, topic, n, parts, value100); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	var mu sync.Mutex
	ctxs := map[int32]context.Context{}
	h := func(ctx context.Context, b *Batch) error {
		mu.Lock()
		ctxs[b.Partition] = ctx
		mu.Unlock()
		return nil
	}
	m1 := startMember(t, cfg, h)
	waitUntil(t, 30*time.Second, "m1 handling all partitions", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ctxs) == parts
	})
	m2 := startMember(t, cfg, func(context.Context, *Batch) error { return nil })
	waitUntil(t, 60*time.Second, "a partition revoked from m1", func() bool { return m1.c.Stats().PartitionsRevoked > 0 })
	owned := map[int32]bool{}
	for _, tp := range m1.c.Assigned() {
		owned[tp.Partition] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for p, ctx := range ctxs {
		if owned[p] {
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("partition %d was revoked but its worker's context is still live", p)
		}
	}
	_ = m2
}

// Guards "bad input is refused, not logged for ever": a group the member is
// not authorized for can never be consumed. Run used to log a warning per
// poll and return nil on close; it now stops and returns the error. Runs on
// an embedded cluster that refuses the member's group.
func TestRunReturnsAnErrorWhenTheGroupIsNotAuthorized(t *testing.T) {
	cluster, err := kafkatest.NewEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	const topic = "noauth"
	if _, err := kafkatest.Admin(t, brokers).CreateTopic(context.Background(), 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	// Refuse the group as Kafka does for a principal without READ on it.
	cluster.ControlKey(int16(kmsg.FindCoordinator), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		for _, k := range req.(*kmsg.FindCoordinatorRequest).CoordinatorKeys {
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key = k
			c.ErrorCode = kerr.GroupAuthorizationFailed.Code
			resp.Coordinators = append(resp.Coordinators, c)
		}
		return resp, nil, true
	})
	cfg := baseConfig(t, topic, "refused")
	cfg.Brokers = brokers
	c, err := New(cfg, func(context.Context, *Batch) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, kerr.GroupAuthorizationFailed) {
			t.Fatalf("Run = %v, want GROUP_AUTHORIZATION_FAILED", err)
		}
		if !strings.Contains(err.Error(), "refused") {
			t.Fatalf("Run's error %q does not name the group", err)
		}
	case <-time.After(30 * time.Second):
		_ = c.Close()
		t.Fatalf("Run still running 30s after every FindCoordinator was refused (fetch errors %d)", c.Stats().FetchErrors)
	}
}

// Guards the other side: a topic that does not exist (yet) is not fatal,
// since it may be created, but it is visible beyond a log line.
func TestMissingTopicIsCountedAndRunGoesOn(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.Name(t, "missing")
	cfg := baseConfig(t, topic, kafkatest.NewGroup(t))
	cfg.Brokers = brokers
	m := startMember(t, cfg, func(context.Context, *Batch) error { return nil })
	waitUntil(t, 30*time.Second, "the missing topic counted", func() bool { return m.c.Stats().MissingTopics == 1 })
	select {
	case err := <-m.done:
		t.Fatalf("Run returned %v for a topic that may still be created", err)
	default:
	}
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
}

// Guards the dead-letter producer's options: it used to be built from
// ClientOpts, so a metrics hook given there (kprom, as the README shows) was
// registered a second time and panicked on the first dead-lettered record.
// The producer connects as the member does, without its hooks.
func TestDeadLetterProducerDoesNotTakeTheMembersHooks(t *testing.T) {
	_, topic, cfg := onePartition(t, 3, produce100)
	reg := prometheus.NewRegistry()
	cfg.ClientOpts = append(cfg.ClientOpts, kgo.WithHooks(kprom.NewMetrics("kbatch_client", kprom.Registry(reg))))
	cfg.DeadLetter = &DeadLetter{}
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		return FailedAt(0, Permanent(errors.New("malformed")))
	})
	readAll(t, cfg.Brokers, topic+".dlq", 3, 30*time.Second)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
}

// Guards invariant 8 with authorization: a dead-letter write the cluster
// refuses (no WRITE on the topic) cannot pass by retrying. Run used to
// retry and log for ever and return nil on close; it now stops with the
// error, and the refused record is not committed. Runs on an embedded
// cluster that refuses produce requests to the dead-letter topic.
func TestRefusedDeadLetterWriteStopsRunWithoutLosingTheRecord(t *testing.T) {
	const topic = "nowrite"
	cluster, brokers := embeddedWithDeadLetter(t, topic)
	kafkatest.Produce(t, brokers, topic, 10, value100)
	refuseProduce(cluster, kerr.TopicAuthorizationFailed, nil)
	cfg := baseConfig(t, topic, "nowrite-group")
	cfg.Brokers = brokers
	cfg.DeadLetter = &DeadLetter{}
	c, err := New(cfg, func(_ context.Context, b *Batch) error {
		if b.FirstOffset() <= 4 && b.LastOffset() >= 4 {
			return FailedAt(int(4-b.FirstOffset()), Permanent(errors.New("malformed")))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, kerr.TopicAuthorizationFailed) || !strings.Contains(err.Error(), "dead-letter") {
			t.Fatalf("Run = %v, want TOPIC_AUTHORIZATION_FAILED naming the dead-letter write", err)
		}
	case <-time.After(30 * time.Second):
		_ = c.Close()
		t.Fatal("Run still running 30s after the dead-letter topic refused a write")
	}
	if got := kafkatest.CommittedOffsets(t, brokers, cfg.Group, topic)[0]; got != 4 {
		t.Fatalf("committed %d, want 4: up to the record that could not be dead-lettered", got)
	}
}

// Guards the dead-letter producer's connection options on a TLS cluster: kgo
// derives a dialer from DialTLSConfig, and copying both was refused ("cannot
// set both Dialer and DialTLSConfig"), so no record could be dead-lettered
// on a TLS cluster.
func TestDeadLetterProducerConnectsLikeTheMemberOverTLS(t *testing.T) {
	for name, opt := range map[string]kgo.Opt{
		"tls":    kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}),
		"dialer": kgo.Dialer((&net.Dialer{}).DialContext),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Group: "g", Topics: []string{"t"}, ClientOpts: []kgo.Opt{opt}},
				func(context.Context, *Batch) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p, err := kgo.NewClient(connectionOpts(c.cl)...)
			if err != nil {
				t.Fatalf("the dead-letter producer's options are refused: %v", err)
			}
			p.Close()
		})
	}
}

// Guards invariant 7's bound when the group coordinator stops answering:
// leaving the group (the final commit, then LeaveGroup) used to be waited for
// without limit, so a member told to stop while its coordinator stalled held
// Close as long as the stall lasted. Close now returns within DrainTimeout
// plus CommitTimeout plus a small constant, and the records handled are not
// lost: what was not committed is read again by the next member.
func TestCloseReturnsInTimeWhenTheCoordinatorStalls(t *testing.T) {
	const topic = "stall"
	cluster, brokers := embeddedOnePartition(t, topic, 1000)

	cfg := Config{
		Brokers: brokers, Group: "stall-group", Topics: []string{topic},
		Batch:         batcher.Policy{MaxRecords: 100},
		Commit:        offsets.Policy{EveryRecords: 1 << 30, Interval: time.Hour},
		DrainTimeout:  500 * time.Millisecond,
		CommitTimeout: time.Second,
		// The member stays in the group when its LeaveGroup is lost: a
		// short session lets the next member in soon after.
		ClientOpts: []kgo.Opt{kgo.SessionTimeout(6 * time.Second)},
	}
	var handled atomic.Int64
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		handled.Add(int64(len(b.Records)))
		return nil
	})
	waitUntil(t, 30*time.Second, "every record handled", func() bool { return handled.Load() == 1000 })

	// From now on the coordinator takes every group request and answers
	// none until the test ends.
	release := make(chan struct{})
	var releaseOnce sync.Once
	unstall := func() { releaseOnce.Do(func() { close(release) }) }
	defer unstall()
	var held atomic.Int64
	for _, key := range []kmsg.Key{kmsg.OffsetCommit, kmsg.LeaveGroup, kmsg.Heartbeat, kmsg.JoinGroup, kmsg.SyncGroup} {
		cluster.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
			cluster.KeepControl()
			select {
			case <-release:
				return nil, nil, false
			default:
			}
			held.Add(1)
			cluster.SleepControl(func() { <-release })
			// A request held through the stall is lost with it: the
			// connection is dropped and nothing it asked is applied.
			return nil, errors.New("coordinator stalled"), true
		})
	}

	start := time.Now()
	err := m.stop()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if held.Load() == 0 {
		t.Fatal("no group request reached the stalled coordinator: the test proves nothing")
	}
	if bound := cfg.DrainTimeout + cfg.CommitTimeout + 6*time.Second; took > bound {
		t.Fatalf("Close took %s while the coordinator stalled, want within %s", took, bound)
	}
	t.Logf("Close took %s while the coordinator stalled (%d group requests held)", took, held.Load())

	// The stall ends; nothing was committed, so a new member reads the
	// records again (at least once), none is lost.
	unstall()
	var again atomic.Int64
	m2 := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		again.Add(int64(len(b.Records)))
		return nil
	})
	waitUntil(t, 60*time.Second, "the records read again", func() bool { return again.Load() == 1000 })
	if err := m2.stop(); err != nil {
		t.Fatal(err)
	}
	if got := again.Load(); got != 1000 {
		t.Fatalf("the next member read %d records, want the 1000 left uncommitted", got)
	}
}
