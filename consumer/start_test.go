package consumer

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// firstOffsets records, per partition, the offset of the first record a
// handler saw.
type firstOffsets struct {
	mu    sync.Mutex
	first map[int32]int64
}

func (f *firstOffsets) handler(_ context.Context, b *Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.first[b.Partition]; !ok {
		f.first[b.Partition] = b.FirstOffset()
	}
	return nil
}

func (f *firstOffsets) get(p int32) (int64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.first[p]
	return o, ok
}

// Guards Config.StartOffsets: a partition it gives an offset for starts
// there, even when Kafka holds a committed offset for it (the sink is the
// truth); a partition it leaves out starts from Kafka's committed offset.
// It is called with the partitions assigned and the token the handler's
// batches then carry.
func TestStartOffsetsDecideWhereAssignedPartitionsStart(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.String(), func(t *testing.T) {
			brokers := kafkatest.Brokers(t)
			topic := kafkatest.NewTopic(t, 3)
			group := kafkatest.NewGroup(t)
			if err := kafkatest.ProduceN(context.Background(), brokers, topic, 300, 3, value100); err != nil {
				t.Fatal(err)
			}
			// Kafka says 10 for every partition; the sink knows better for 0 and 1.
			adm := kafkatest.Admin(t, brokers)
			var commit kadm.Offsets
			for p := range int32(3) {
				commit.AddOffset(topic, p, 10, -1)
			}
			if err := adm.CommitAllOffsets(context.Background(), group, commit); err != nil {
				t.Fatal(err)
			}

			var (
				mu     sync.Mutex
				calls  int
				asked  []offsets.Partition
				tokens []FencingToken
			)
			f := &firstOffsets{first: map[int32]int64{}}
			var batchToken atomic.Int64
			cfg := baseConfig(t, topic, group)
			cfg.Protocol = proto
			cfg.StartOffsets = func(_ context.Context, token FencingToken, tps []offsets.Partition) (map[offsets.Partition]int64, error) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				asked = append(asked, tps...)
				tokens = append(tokens, token)
				return map[offsets.Partition]int64{
					{Topic: topic, Partition: 0}: 60,
					{Topic: topic, Partition: 1}: 99,
					{Topic: topic, Partition: 2}: -1, // nothing stored: Kafka's committed offset
				}, nil
			}
			m := startMember(t, cfg, func(ctx context.Context, b *Batch) error {
				batchToken.Store(int64(b.Token()))
				return f.handler(ctx, b)
			})
			waitUntil(t, 30*time.Second, "every partition to deliver", func() bool {
				_, ok0 := f.get(0)
				_, ok1 := f.get(1)
				_, ok2 := f.get(2)
				return ok0 && ok1 && ok2
			})
			for p, want := range map[int32]int64{0: 60, 1: 99, 2: 10} {
				if got, _ := f.get(p); got != want {
					t.Errorf("partition %d started at %d, want %d", p, got, want)
				}
			}
			_, gen := m.c.cl.GroupMetadata()
			if err := m.stop(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if calls != 1 || len(asked) != 3 {
				t.Fatalf("StartOffsets called %d times for %v, want once for the 3 partitions", calls, asked)
			}
			if tokens[0] <= 0 || tokens[0] != FencingToken(gen) || FencingToken(batchToken.Load()) != tokens[0] {
				t.Fatalf("token given %d, batches carried %d, group generation/epoch %d: want one positive value", tokens[0], batchToken.Load(), gen)
			}
		})
	}
}

// Guards when the member joins its group: at Run, not at New. A member that
// joined at New owned partitions (and had StartOffsets called) before Run,
// and a service that waited between the two held them without consuming.
func TestTheMemberJoinsItsGroupAtRun(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.String(), func(t *testing.T) {
			brokers := kafkatest.Brokers(t)
			topic := kafkatest.NewTopic(t, 2)
			group := kafkatest.NewGroup(t)
			if err := kafkatest.ProduceN(context.Background(), brokers, topic, 10, 2, value100); err != nil {
				t.Fatal(err)
			}
			var asked atomic.Int32
			var handled atomic.Int64
			cfg := baseConfig(t, topic, group)
			cfg.Protocol = proto
			cfg.StartOffsets = func(context.Context, FencingToken, []offsets.Partition) (map[offsets.Partition]int64, error) {
				asked.Add(1)
				return nil, nil
			}
			c, err := New(cfg, func(_ context.Context, b *Batch) error {
				handled.Add(int64(len(b.Records)))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			time.Sleep(2 * time.Second) // a join at New takes well under this on an idle broker
			if n := asked.Load(); n != 0 {
				t.Fatalf("StartOffsets called %d times before Run: the member joined at New", n)
			}
			if n := c.Stats().Rebalances; n != 0 {
				t.Fatalf("%d partition assignments before Run", n)
			}
			done := make(chan error, 1)
			go func() { done <- c.Run(context.Background()) }()
			waitUntil(t, 30*time.Second, "every record handled after Run", func() bool { return handled.Load() == 10 })
			if asked.Load() == 0 {
				t.Fatal("StartOffsets never called after Run")
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
		})
	}
}

// Guards the Kafka commit of partitions started by StartOffsets, which lag
// tools read: a partition the sink says is finished (its start is the log's
// end, ahead of Kafka's commit) is committed at its end while the member runs,
// though no record of it is handled; a start beyond the log's end is reset
// like a committed offset and never committed as such.
func TestStartOffsetsAheadOfKafkaAreCommittedForLagTools(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.String(), func(t *testing.T) {
			const parts = 4
			brokers := kafkatest.Brokers(t)
			topic := kafkatest.NewTopic(t, parts)
			group := kafkatest.NewGroup(t)
			ctx := context.Background()
			if err := kafkatest.ProduceN(ctx, brokers, topic, 400, parts, value100); err != nil {
				t.Fatal(err)
			}
			adm := kafkatest.Admin(t, brokers)
			listed, err := adm.ListEndOffsets(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			end := map[int32]int64{}
			listed.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
			var commit kadm.Offsets
			for p := range int32(parts) {
				commit.AddOffset(topic, p, 10, -1)
			}
			if err := adm.CommitAllOffsets(ctx, group, commit); err != nil {
				t.Fatal(err)
			}
			committed := func(p int32) int64 {
				got, err := adm.FetchOffsets(ctx, group)
				if err != nil {
					return -1
				}
				o, _ := got.Lookup(topic, p)
				return o.At
			}

			f := &firstOffsets{first: map[int32]int64{}}
			cfg := baseConfig(t, topic, group)
			cfg.Protocol = proto
			cfg.Commit.Interval = 100 * time.Millisecond
			cfg.StartOffsets = func(context.Context, FencingToken, []offsets.Partition) (map[offsets.Partition]int64, error) {
				return map[offsets.Partition]int64{
					{Topic: topic, Partition: 0}: end[0],        // finished: nothing follows
					{Topic: topic, Partition: 1}: 50,            // records follow
					{Topic: topic, Partition: 3}: end[3] + 1000, // beyond the log: reset to its start
				}, nil
			}
			m := startMember(t, cfg, f.handler)
			waitUntil(t, 30*time.Second, "partition 0 committed at its end while running", func() bool {
				return committed(0) == end[0]
			})
			for p, want := range map[int32]int64{1: 50, 2: 10, 3: 0} {
				waitUntil(t, 30*time.Second, "every other partition to deliver", func() bool {
					_, ok := f.get(p)
					return ok
				})
				if got, _ := f.get(p); got != want {
					t.Errorf("partition %d started at %d, want %d", p, got, want)
				}
			}
			if got, ok := f.get(0); ok {
				t.Errorf("partition 0 delivered from %d, want nothing", got)
			}
			if err := m.stop(); err != nil {
				t.Fatal(err)
			}
			for p := range int32(parts) {
				if got := committed(p); got != end[p] {
					t.Errorf("partition %d committed at %d, want its end %d", p, got, end[p])
				}
			}
		})
	}
}

// Guards invariant 4 for sinks that fence by token: every new ownership of
// a partition, moved to another member and back, carries a greater token
// than every earlier one, under both protocols; a member keeps its token for
// the partitions it keeps; and every batch carries the token its member was
// given for that partition.
func TestFencingTokenGrowsWithEveryNewOwnership(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.String(), func(t *testing.T) {
			brokers := kafkatest.Brokers(t)
			topic := kafkatest.NewTopic(t, 4)
			group := kafkatest.NewGroup(t)

			type grant struct {
				member string
				token  FencingToken
			}
			var (
				mu      sync.Mutex
				history = map[int32][]grant{}                 // per partition, in call order
				current = map[string]map[int32]FencingToken{} // member -> partition -> token
				wrong   []string
				batches = map[string]int{}
			)
			hook := func(name string) StartOffsetsFunc {
				return func(_ context.Context, token FencingToken, tps []offsets.Partition) (map[offsets.Partition]int64, error) {
					mu.Lock()
					defer mu.Unlock()
					if current[name] == nil {
						current[name] = map[int32]FencingToken{}
					}
					for _, tp := range tps {
						history[tp.Partition] = append(history[tp.Partition], grant{name, token})
						current[name][tp.Partition] = token
					}
					return nil, nil
				}
			}
			handler := func(name string) Handler {
				return func(_ context.Context, b *Batch) error {
					mu.Lock()
					defer mu.Unlock()
					batches[name]++
					if want := current[name][b.Partition]; b.Token() != want {
						wrong = append(wrong, fmt.Sprintf("%s p%d: batch token %d, given %d", name, b.Partition, b.Token(), want))
					}
					return nil
				}
			}
			join := func(name string) *member {
				cfg := baseConfig(t, topic, group)
				cfg.Protocol = proto
				cfg.StartOffsets = hook(name)
				return startMember(t, cfg, handler(name))
			}
			produce := func() {
				t.Helper()
				if err := kafkatest.ProduceN(context.Background(), brokers, topic, 400, 4, value100); err != nil {
					t.Fatal(err)
				}
			}
			owned := func(m *member, n int) func() bool {
				return func() bool { return len(m.c.Assigned()) == n }
			}

			a := join("a")
			waitUntil(t, 30*time.Second, "a to own the 4 partitions", owned(a, 4))
			produce()
			waitUntil(t, 30*time.Second, "a to handle", func() bool { mu.Lock(); defer mu.Unlock(); return batches["a"] > 0 })

			b := join("b")
			waitUntil(t, 60*time.Second, "a and b to share the partitions", func() bool {
				return len(a.c.Assigned()) == 2 && len(b.c.Assigned()) == 2
			})
			produce()
			waitUntil(t, 30*time.Second, "b to handle", func() bool { mu.Lock(); defer mu.Unlock(); return batches["b"] > 0 })
			if err := b.stop(); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 60*time.Second, "a to own the 4 partitions again", owned(a, 4))
			produce()
			time.Sleep(300 * time.Millisecond) // some batches under the last ownership
			if err := a.stop(); err != nil {
				t.Fatal(err)
			}

			mu.Lock()
			defer mu.Unlock()
			if len(wrong) > 0 {
				t.Fatalf("batches with the wrong token: %v", wrong)
			}
			moved := 0
			for p, h := range history {
				for i := 1; i < len(h); i++ {
					if h[i].token <= h[i-1].token {
						t.Errorf("partition %d: ownership %d (%s) has token %d, not above ownership %d (%s) token %d",
							p, i, h[i].member, h[i].token, i-1, h[i-1].member, h[i-1].token)
					}
				}
				if len(h) >= 3 {
					moved++ // a -> b -> a
				}
				t.Logf("partition %d: %v", p, h)
			}
			if moved == 0 {
				t.Fatal("no partition moved to b and back: the test proved nothing")
			}
		})
	}
}

// Guards invariant 4 for a lost partition: the batch a member was handling
// when its session was lost carries a token smaller than the one its next
// ownership of the partition gets, so a sink fencing by token refuses the
// stalled batch's write. Classic protocol: it injects UNKNOWN_MEMBER_ID into
// heartbeats on a kfake cluster of its own.
func TestLostPartitionsTokenIsStale(t *testing.T) {
	const topic = "lost-token"
	cluster, brokers := embeddedOnePartition(t, topic, 2000)

	inHandler := make(chan FencingToken, 1)
	var (
		calls     atomic.Int64
		lastToken atomic.Int64
	)
	cfg := baseConfig(t, topic, "lost-token-group")
	cfg.Brokers = brokers
	cfg.Batch.MaxRecords = 100
	cfg.ClientOpts = []kgo.Opt{kgo.HeartbeatInterval(100 * time.Millisecond)}
	cfg.StartOffsets = func(context.Context, FencingToken, []offsets.Partition) (map[offsets.Partition]int64, error) {
		return nil, nil
	}
	m := startMember(t, cfg, func(ctx context.Context, b *Batch) error {
		lastToken.Store(int64(b.Token()))
		if calls.Add(1) != 2 {
			return nil
		}
		inHandler <- b.Token()
		<-ctx.Done() // stalled until the partition is lost
		return ctx.Err()
	})
	stale := <-inHandler
	member, _ := m.c.cl.GroupMetadata()
	var once atomic.Bool
	cluster.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.HeartbeatRequest)
		if r.MemberID != member || !once.CompareAndSwap(false, true) {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp, nil, true
	})
	waitUntil(t, 30*time.Second, "the partition to be lost and handled again", func() bool {
		return m.c.Stats().PartitionsLost >= 1 && FencingToken(lastToken.Load()) != stale
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if next := FencingToken(lastToken.Load()); next <= stale {
		t.Fatalf("the next ownership's token %d is not above the lost one's %d", next, stale)
	}
}

// Guards Config.StartOffsets errors: a call that keeps failing stops Run
// with an error that names StartOffsets and wraps the cause, and nothing of
// the partitions is handled; one that fails and then succeeds only delays
// the start.
func TestStartOffsetsFailures(t *testing.T) {
	cause := errors.New("sink unreachable")
	cases := []struct {
		name     string
		failures int64 // calls that fail before one succeeds; -1: all
		offsets  func(topic string) map[offsets.Partition]int64
		wantErr  string // "" for a clean run
	}{
		{name: "a failing sink stops the consumer", failures: -1, wantErr: "StartOffsets"},
		{name: "a sink that recovers within DrainTimeout only delays", failures: 2},
		{name: "an offset for a partition not assigned is refused", failures: 0, wantErr: "not assigned",
			offsets: func(topic string) map[offsets.Partition]int64 {
				return map[offsets.Partition]int64{{Topic: topic, Partition: 7}: 1}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			brokers, topic, cfg := onePartition(t, 100, produce100)
			_ = brokers
			cfg.Retry = Retry{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}
			cfg.DrainTimeout = 2 * time.Second
			var calls atomic.Int64
			cfg.StartOffsets = func(context.Context, FencingToken, []offsets.Partition) (map[offsets.Partition]int64, error) {
				n := calls.Add(1)
				if tc.failures < 0 || n <= tc.failures {
					return nil, cause
				}
				if tc.offsets != nil {
					return tc.offsets(topic), nil
				}
				return map[offsets.Partition]int64{{Topic: topic, Partition: 0}: 50}, nil
			}
			f := &firstOffsets{first: map[int32]int64{}}
			c, err := New(cfg, f.handler)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			if tc.wantErr == "" {
				waitUntil(t, 30*time.Second, "the partition to deliver", func() bool { _, ok := f.get(0); return ok })
				if got, _ := f.get(0); got != 50 {
					t.Fatalf("started at %d, want 50", got)
				}
				_ = c.Close()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				return
			}
			err = <-done
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run returned %v, want an error about %q", err, tc.wantErr)
			}
			if tc.failures < 0 && !errors.Is(err, cause) {
				t.Fatalf("Run's error %v does not wrap the cause", err)
			}
			if got, ok := f.get(0); ok {
				t.Fatalf("the handler saw offset %d of a partition whose start is unknown", got)
			}
		})
	}
}

// Guards NewTestBatch's token: handler tests can give a batch the token
// they fence with.
func TestNewTestBatchWithToken(t *testing.T) {
	b := NewTestBatch("t", 0, []*kgo.Record{{Offset: 1}}, nil)
	if b.Token() != 0 {
		t.Fatalf("token %d before WithToken, want 0", b.Token())
	}
	if got := b.WithToken(7).Token(); got != 7 {
		t.Fatalf("token %d, want 7", got)
	}
}

// Guards Close during a failing StartOffsets: the retries stop at once and
// Run returns nil (the user asked to stop; the failing sink is not why),
// without waiting out DrainTimeout and without handling anything.
func TestCloseStopsStartOffsetsRetries(t *testing.T) {
	_, _, cfg := onePartition(t, 10, produce100)
	cfg.Retry = Retry{Initial: 50 * time.Millisecond, Max: 50 * time.Millisecond}
	cfg.DrainTimeout = time.Minute
	failing := make(chan struct{}, 1)
	cfg.StartOffsets = func(context.Context, FencingToken, []offsets.Partition) (map[offsets.Partition]int64, error) {
		select {
		case failing <- struct{}{}:
		default:
		}
		return nil, errors.New("sink unreachable")
	}
	var handled atomic.Bool
	c, err := New(cfg, func(context.Context, *Batch) error { handled.Store(true); return nil })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	<-failing
	// The client joins the group from New on, so StartOffsets may fail
	// before Run's goroutine started; Close then comes before Run, which
	// returns ErrClosed. Close here is meant for a running consumer.
	waitUntil(t, 30*time.Second, "Run started", c.running.Load)
	start := time.Now()
	_ = c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after Close, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of Close")
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("Close took %s: the retries waited out DrainTimeout", d)
	}
	if handled.Load() {
		t.Fatal("a batch was handled though its partition's start is unknown")
	}
}

// Guards StartOffsets on the fenced-restart path: after a commit refused for
// a stale generation, the partitions kept by the next session start again
// where the sink says (asked again, under the new session's greater token).
// The stopped worker's batch still in its handler is the zombie here: the
// sink, fencing by token, refuses its write. With a sink that stores its
// offset and token with its results, no record is written twice and none is
// lost. It injects the error, so it runs on a kfake cluster of its own.
func TestFencedRestartStartsWhereTheSinkSays(t *testing.T) {
	cluster, err := kafkatest.NewEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	const topic, n, parts = "fenced-start", 20000, 2
	if _, err := kafkatest.Admin(t, brokers).CreateTopic(context.Background(), parts, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	if err := kafkatest.ProduceN(context.Background(), brokers, topic, n, parts, value100); err != nil {
		t.Fatal(err)
	}
	// The first commit past a quarter of partition 0 is refused with
	// ILLEGAL_GENERATION for every partition.
	var fenced atomic.Bool
	cluster.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		past := false
		for _, rt := range r.Topics {
			for _, rp := range rt.Partitions {
				past = past || (rp.Partition == 0 && rp.Offset > n/parts/4)
			}
		}
		if !past || !fenced.CompareAndSwap(false, true) {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.IllegalGeneration.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	// The sink: per partition the next offset and the owner's token,
	// written with the results.
	var (
		mu      sync.Mutex
		next    = map[int32]int64{}
		owner   = map[int32]FencingToken{}
		handled = map[int32]map[int64]int{}
		calls   []FencingToken
		refused int
	)
	cfg := Config{
		Brokers: brokers, Group: "fenced-start-group", Topics: []string{topic},
		Batch:      batcher.Policy{MaxRecords: 100, MaxWait: 10 * time.Millisecond},
		Commit:     offsets.Policy{EveryRecords: -1, Interval: 20 * time.Millisecond},
		ClientOpts: []kgo.Opt{kgo.HeartbeatInterval(100 * time.Millisecond)},
		StartOffsets: func(_ context.Context, token FencingToken, tps []offsets.Partition) (map[offsets.Partition]int64, error) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, token)
			out := map[offsets.Partition]int64{}
			for _, tp := range tps {
				owner[tp.Partition] = token // the claim
				if at, ok := next[tp.Partition]; ok {
					out[tp] = at
				}
			}
			return out, nil
		},
	}
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		s := 0
		for _, m := range handled {
			s += len(m)
		}
		return s
	}
	m := startMember(t, cfg, func(_ context.Context, b *Batch) error {
		time.Sleep(time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if owner[b.Partition] > b.Token() {
			refused++
			return errors.New("refused: the partition has a newer owner")
		}
		if at, ok := next[b.Partition]; ok && b.FirstOffset() != at {
			t.Errorf("partition %d: batch starts at %d, the sink's next offset is %d", b.Partition, b.FirstOffset(), at)
		}
		if handled[b.Partition] == nil {
			handled[b.Partition] = map[int64]int{}
		}
		for _, r := range b.Records {
			handled[b.Partition][r.Offset]++
		}
		next[b.Partition] = b.LastOffset() + 1
		return nil
	})
	waitUntil(t, 60*time.Second, "every record, after the fence", func() bool { return total() == n })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if !fenced.Load() {
		t.Fatal("the fence was never injected")
	}
	mu.Lock()
	defer mu.Unlock()
	for p, m := range handled {
		for off, k := range m {
			if k != 1 {
				t.Errorf("partition %d offset %d handled %d times", p, off, k)
			}
		}
	}
	if len(calls) < 2 || calls[len(calls)-1] <= calls[0] {
		t.Fatalf("StartOffsets tokens %v: want a second call, for the restart, under a greater token", calls)
	}
	t.Logf("StartOffsets tokens: %v; writes refused: %d", calls, refused)
}
