package kafkatest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/kbatch/kbatch/kbatchtest"
)

// EnvTestcontainers, set to 1 (or true) next to KAFKA_BROKERS, says that the
// brokers are a container started by the testcontainers module.
const EnvTestcontainers = "KBATCH_TESTCONTAINERS"

var (
	sharedOnce sync.Once
	shared     *kbatchtest.Cluster // the broker every test of this binary uses
	sharedErr  error
)

// Kind says which broker Brokers returns: "testcontainers" (when
// KBATCH_TESTCONTAINERS=1), "env" (KAFKA_BROKERS) or "kfake".
func Kind() string {
	switch {
	case useTestcontainers():
		return "testcontainers"
	case os.Getenv(kbatchtest.EnvBrokers) != "":
		return "env"
	}
	return "kfake"
}

// IsReal reports whether tests run against a real Kafka broker.
func IsReal() bool { return Kind() != "kfake" }

func useTestcontainers() bool {
	on, err := strconv.ParseBool(os.Getenv(EnvTestcontainers))
	return err == nil && on
}

// cluster returns the broker shared by the tests of this binary, starting
// the embedded one on first use.
func cluster(t testing.TB) *kbatchtest.Cluster {
	t.Helper()
	if useTestcontainers() && os.Getenv(kbatchtest.EnvBrokers) == "" {
		t.Fatalf("kafkatest: %s=1 without %s: the Kafka container is started by the testcontainers module, which then runs the suites against it: go -C testcontainers run . (needs Docker); unset %s to test on the embedded kfake broker",
			EnvTestcontainers, kbatchtest.EnvBrokers, EnvTestcontainers)
	}
	sharedOnce.Do(func() { shared, sharedErr = kbatchtest.Start() })
	if sharedErr != nil {
		t.Fatalf("kafkatest: %v", sharedErr)
	}
	return shared
}

// Brokers returns the seed brokers for the test, starting the embedded
// cluster on first use.
func Brokers(t testing.TB) []string {
	t.Helper()
	return cluster(t).Brokers()
}

// NewEmbedded starts a kfake cluster of three brokers on loopback ports. The
// caller closes it. Tests use Brokers instead; this is for tests that need a
// broker of their own (fault injection, broker configs).
func NewEmbedded(opts ...kfake.Opt) (*kfake.Cluster, error) {
	c, err := kbatchtest.Embedded(opts...)
	if err != nil {
		return nil, err
	}
	return c.Fake(), nil // c made no client yet: closing the fake is enough
}

// Name returns a name unique to this test and run: prefix-testname-random.
func Name(t testing.TB, prefix string) string { return kbatchtest.Name(t, prefix) }

// NewGroup returns a group name unique to the test.
func NewGroup(t testing.TB) string { return Name(t, "g") }

// NewTopic creates a topic unique to the test with the given partitions and
// deletes it when the test ends.
func NewTopic(t testing.TB, partitions int) string {
	t.Helper()
	return cluster(t).NewTopic(t, partitions)
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

// connect runs f on a Cluster for brokers, closed afterwards.
func connect(brokers []string, f func(*kbatchtest.Cluster) error) error {
	c, err := kbatchtest.Connect(brokers...)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

// Produce writes n records to topic, record i with key "k<i>" spread over
// partitions by key hash, and value value(i). It waits until all are
// acknowledged.
func Produce(t testing.TB, brokers []string, topic string, n int, value func(i int) []byte) {
	t.Helper()
	if err := ProduceN(context.Background(), brokers, topic, n, 0, value); err != nil {
		t.Fatalf("kafkatest: producing: %v", err)
	}
}

// ProduceN writes n records with keys "k<i>" and values value(i); record i
// goes to partition i mod the topic's partition count when partitions > 0
// (so each partition gets an even share), else to the partition of its key.
func ProduceN(ctx context.Context, brokers []string, topic string, n, partitions int, value func(i int) []byte) error {
	return connect(brokers, func(c *kbatchtest.Cluster) error {
		if partitions > 0 {
			return c.ProduceEven(ctx, topic, n, kbatchtest.Values(value))
		}
		return c.Produce(ctx, topic, n, kbatchtest.Values(value))
	})
}

// CommittedOffsets returns the group's committed offsets for topic.
func CommittedOffsets(t testing.TB, brokers []string, group, topic string) map[int32]int64 {
	t.Helper()
	var out map[int32]int64
	err := connect(brokers, func(c *kbatchtest.Cluster) (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err = c.Committed(ctx, group, topic)
		return err
	})
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	return out
}

// EndOffsets returns the end offset of each partition of topic.
func EndOffsets(t testing.TB, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	var out map[int32]int64
	err := connect(brokers, func(c *kbatchtest.Cluster) (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err = c.EndOffsets(ctx, topic)
		return err
	})
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	return out
}

// CreateTopic creates topic with the given partitions and the broker's
// default replication; a topic that already exists is not an error. It is for
// programs; tests use NewTopic.
func CreateTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	return connect(brokers, func(c *kbatchtest.Cluster) error {
		return c.CreateTopic(ctx, topic, partitions)
	})
}

// Shutdown closes the shared broker (the embedded cluster, or the clients
// on KAFKA_BROKERS) if one was started. Call it from TestMain after m.Run,
// before checking for leaked goroutines.
func Shutdown() {
	if shared != nil {
		shared.Close()
	}
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
