package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

var (
	embeddedOnce sync.Once
	embedded     *kfake.Cluster
	embeddedErr  error
)

// Kind says which broker Brokers returns: "testcontainers" (when
// KBATCH_TESTCONTAINERS=1), "env" (KAFKA_BROKERS) or "kfake".
func Kind() string {
	switch {
	case useTestcontainers():
		return "testcontainers"
	case os.Getenv("KAFKA_BROKERS") != "":
		return "env"
	}
	return "kfake"
}

// IsReal reports whether tests run against a real Kafka broker.
func IsReal() bool { return Kind() != "kfake" }

// Brokers returns the seed brokers for the test, starting the embedded
// cluster (or the container) on first use. With KBATCH_TESTCONTAINERS=1 and
// no Docker engine it skips the test.
func Brokers(t testing.TB) []string {
	t.Helper()
	switch Kind() {
	case "testcontainers":
		return brokersFromContainer(t)
	case "env":
		return strings.Split(os.Getenv("KAFKA_BROKERS"), ",")
	}
	embeddedOnce.Do(func() {
		embedded, embeddedErr = NewEmbedded()
	})
	if embeddedErr != nil {
		t.Fatalf("kafkatest: starting kfake: %v", embeddedErr)
	}
	return embedded.ListenAddrs()
}

// NewEmbedded starts a kfake cluster of three brokers on loopback ports. The
// caller closes it. Tests use Brokers instead; this is for programs (the
// quickstart, the bench) that want a broker of their own.
func NewEmbedded(opts ...kfake.Opt) (*kfake.Cluster, error) {
	base := []kfake.Opt{
		kfake.NumBrokers(3),
		kfake.AllowAutoTopicCreation(),
	}
	return kfake.NewCluster(append(base, opts...)...)
}

// Name returns a name unique to this test and run: prefix-testname-random.
func Name(t testing.TB, prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	// Kafka allows only [a-zA-Z0-9._-] in topic names (kfake allows more).
	n := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, t.Name())
	if len(n) > 80 {
		n = n[:80]
	}
	return fmt.Sprintf("%s-%s-%s", prefix, n, hex.EncodeToString(b[:]))
}

// NewGroup returns a group name unique to the test.
func NewGroup(t testing.TB) string { return Name(t, "g") }

// NewTopic creates a topic unique to the test with the given partitions and
// deletes it when the test ends.
func NewTopic(t testing.TB, partitions int) string {
	t.Helper()
	brokers := Brokers(t)
	topic := Name(t, "t")
	adm := Admin(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("kafkatest: creating topic %s: %v", topic, err)
	}
	// A real broker answers CreateTopics before its metadata shows the
	// topic; a test that looks it up at once would see
	// UNKNOWN_TOPIC_OR_PARTITION. Wait until every partition has a leader.
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			if td, ok := md.Topics[topic]; ok && td.Err == nil && len(td.Partitions) == partitions && allLed(td) {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: topic %s not in the metadata within 30s (last error %v)", topic, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, topic)
	})
	return topic
}

func allLed(td kadm.TopicDetail) bool {
	for _, p := range td.Partitions {
		if p.Err != nil || p.Leader < 0 {
			return false
		}
	}
	return true
}

// Admin returns an admin client closed when the test ends.
func Admin(t testing.TB, brokers []string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// Produce writes n records to topic, record i with key "k<i mod keys>"
// spread over partitions by key hash, and value value(i). It waits until all
// are acknowledged.
func Produce(t testing.TB, brokers []string, topic string, n int, value func(i int) []byte) {
	t.Helper()
	if err := ProduceN(context.Background(), brokers, topic, n, 0, value); err != nil {
		t.Fatalf("kafkatest: producing: %v", err)
	}
}

// ProduceN writes n records; record i goes to partition i mod partitions
// when partitions > 0 (a manual partitioner, so each partition gets an even
// share), else by the default partitioner on the key.
func ProduceN(ctx context.Context, brokers []string, topic string, n, partitions int, value func(i int) []byte) error {
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5 * time.Millisecond), kgo.MaxBufferedRecords(100000)}
	if partitions > 0 {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var (
		mu      sync.Mutex
		firstEr error
		wg      sync.WaitGroup
	)
	for i := range n {
		r := &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i)), Value: value(i)}
		if partitions > 0 {
			r.Partition = int32(i % partitions)
		}
		wg.Add(1)
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				if firstEr == nil {
					firstEr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstEr
}

// CommittedOffsets returns the group's committed offsets for topic.
func CommittedOffsets(t testing.TB, brokers []string, group, topic string) map[int32]int64 {
	t.Helper()
	adm := Admin(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.FetchOffsetsForTopics(ctx, group, topic)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{} // nothing committed yet
	}
	if err != nil {
		t.Fatalf("kafkatest: fetching offsets: %v", err)
	}
	out := map[int32]int64{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

// EndOffsets returns the end offset of each partition of topic.
func EndOffsets(t testing.TB, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	adm := Admin(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("kafkatest: listing end offsets: %v", err)
	}
	out := map[int32]int64{}
	resp.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// Shutdown closes the embedded cluster and removes the Kafka container if
// either was started. Call it from TestMain after m.Run, before checking for
// leaked goroutines.
func Shutdown() {
	if embedded != nil {
		embedded.Close()
	}
	stopContainer()
}

// Run is a TestMain for packages that use a test broker: it runs the tests,
// shuts the broker down, then fails the run if a goroutine leaked. It
// returns the exit code:
//
//	func TestMain(m *testing.M) { os.Exit(kafkatest.Run(m)) }
func Run(m *testing.M) int {
	code := m.Run()
	Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}

// CreateTopic creates topic with the given partitions and the broker's
// default replication; a topic that already exists is not an error. It is for
// programs (examples, the bench); tests use NewTopic.
func CreateTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, int32(partitions), -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	return nil
}
