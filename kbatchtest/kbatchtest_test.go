package kbatchtest_test

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/kbatchtest"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]+$`)

// Guards against a subtest's "/" or a space reaching a topic name: kfake
// accepts it, a real broker refuses the topic.
func TestNameKeepsToTheCharactersKafkaAllows(t *testing.T) {
	t.Run("a sub test / with spaces", func(t *testing.T) {
		a, b := kbatchtest.Name(t, "t"), kbatchtest.Name(t, "t")
		for _, n := range []string{a, b, kbatchtest.UniqueName("quick start")} {
			if !topicName.MatchString(n) {
				t.Errorf("%q is not a valid Kafka topic name", n)
			}
		}
		if a == b {
			t.Errorf("two calls gave the same name %q", a)
		}
		if !strings.HasPrefix(a, "t-TestNameKeepsToTheCharactersKafkaAllows-a_sub_test_-_with_spaces-") {
			t.Errorf("%q does not start with the prefix and the test name", a)
		}
	})
}

// Guards the KAFKA_BROKERS switch: a suite pointed at a real cluster must not
// silently run on an embedded one.
func TestStartUsesKafkaBrokersWhenSet(t *testing.T) {
	t.Setenv(kbatchtest.EnvBrokers, " 10.0.0.1:9092, ,10.0.0.2:9092")
	c, err := kbatchtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := c.Brokers(), []string{"10.0.0.1:9092", "10.0.0.2:9092"}; !slices.Equal(got, want) {
		t.Errorf("Brokers() = %v, want %v", got, want)
	}
	if c.Fake() != nil {
		t.Error("Fake() is not nil for an existing cluster")
	}
}

func TestConnectRefusesNoBrokers(t *testing.T) {
	if _, err := kbatchtest.Connect(); err == nil {
		t.Fatal("Connect() with no brokers returned no error")
	}
}

// Guards against a test that keeps using a closed cluster hanging on a
// dead client instead of failing.
func TestClosedClusterRefusesWorkAndClosesOnce(t *testing.T) {
	c, err := kbatchtest.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close()
	if _, err := c.EndOffsets(context.Background(), "any"); err == nil {
		t.Error("EndOffsets on a closed cluster returned no error")
	}
}

// Guards ProduceEven's promise that every partition gets the same share,
// which the consumer tests rely on to load all partitions.
func TestProduceEvenGivesEveryPartitionAnEqualShare(t *testing.T) {
	k := kbatchtest.New(t)
	ctx := ctxFor(t, 30*time.Second)
	topic := k.NewTopic(t, 4)
	if err := k.ProduceEven(ctx, topic, 40, kbatchtest.Values(func(int) []byte { return []byte("v") })); err != nil {
		t.Fatal(err)
	}
	end, err := k.EndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p := range int32(4) {
		if end[p] != 10 {
			t.Errorf("partition %d has %d records, want 10 (all: %v)", p, end[p], end)
		}
	}
}

// Guards Produce's routing by key: records of one key must land on one
// partition, or a user's ordering test proves nothing.
func TestProduceKeepsAKeyOnOnePartition(t *testing.T) {
	k := kbatchtest.New(t)
	ctx := ctxFor(t, 30*time.Second)
	topic := k.NewTopic(t, 4)
	const n = 60
	record := kbatchtest.Values(func(i int) []byte { return []byte{byte(i)} })
	// Every record has the same key.
	if err := k.Produce(ctx, topic, n, func(i int) *kgo.Record { r := record(i); r.Key = []byte("one key"); return r }); err != nil {
		t.Fatal(err)
	}
	end, err := k.EndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	used := 0
	for _, e := range end {
		total += e
		if e > 0 {
			used++
		}
	}
	if total != n || used != 1 {
		t.Errorf("end offsets %v: want %d records on one partition", end, n)
	}
}

// Guards WaitCommitted against returning before the group reached the
// wanted offsets, and against waiting for partitions that were not asked.
func TestWaitCommittedReturnsOnceTheGroupCommitted(t *testing.T) {
	k := kbatchtest.New(t)
	ctx := ctxFor(t, 30*time.Second)
	topic := k.NewTopic(t, 2)
	group := kbatchtest.Name(t, "g")
	if err := k.ProduceEven(ctx, topic, 10, kbatchtest.Values(func(int) []byte { return nil })); err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{0: 5, 1: 5}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := k.WaitCommitted(short, group, topic, want); err == nil {
		t.Fatal("WaitCommitted returned nil before anything was committed")
	}

	commit(t, ctx, k, group, topic, map[int32]int64{0: 5})
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err := k.WaitCommitted(short, group, topic, want)
	if err == nil || !strings.Contains(err.Error(), "partition 1 nothing committed of 5") || strings.Contains(err.Error(), "partition 0") {
		t.Fatalf("WaitCommitted with partition 1 uncommitted: %v, want an error naming partition 1 only", err)
	}

	done := make(chan error, 1)
	go func() { done <- k.WaitCommitted(ctx, group, topic, want) }()
	commit(t, ctx, k, group, topic, map[int32]int64{1: 5})
	if err := <-done; err != nil {
		t.Fatalf("WaitCommitted after both partitions committed: %v", err)
	}
	got, err := k.Committed(ctx, group, topic)
	if err != nil || got[0] != 5 || got[1] != 5 {
		t.Fatalf("Committed = %v, %v; want 5 on both partitions", got, err)
	}
}

// commit commits offsets for group as an admin would (no member).
func commit(t *testing.T, ctx context.Context, k *kbatchtest.Cluster, group, topic string, at map[int32]int64) {
	t.Helper()
	adm, err := k.Admin()
	if err != nil {
		t.Fatal(err)
	}
	var os kadm.Offsets
	for p, o := range at {
		os.AddOffset(topic, p, o, -1)
	}
	resp, err := adm.CommitOffsets(ctx, group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("committing %v: %v", at, err)
	}
}

// Guards ProduceEven against reading the partition count before the topic
// shows in the metadata: a real broker answers CreateTopics first, and a
// suite that creates its topic itself produces right after.
func TestProduceEvenWaitsForATopicCreatedElsewhere(t *testing.T) {
	k := kbatchtest.New(t)
	ctx := ctxFor(t, 30*time.Second)
	topic := kbatchtest.Name(t, "t")
	done := make(chan error, 1)
	go func() {
		done <- k.ProduceEven(ctx, topic, 30, kbatchtest.Values(func(int) []byte { return nil }))
	}()
	select {
	case err := <-done:
		t.Fatalf("ProduceEven returned before the topic existed: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	adm, err := k.Admin()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := adm.CreateTopic(ctx, 3, 1, nil, topic)
	if err == nil {
		err = resp.Err // TopicAlreadyExists: the wait created the topic itself
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	end, err := k.EndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if end[0] != 10 || end[1] != 10 || end[2] != 10 {
		t.Errorf("end offsets %v, want 10 on each of 3 partitions", end)
	}
}
