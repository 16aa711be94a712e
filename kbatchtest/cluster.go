package kbatchtest

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// EnvBrokers names the environment variable that points Start and New at an
// existing cluster instead of an embedded one.
const EnvBrokers = "KAFKA_BROKERS"

// Cluster is a Kafka cluster for tests: an embedded kfake cluster or an
// existing one. Its methods are safe for concurrent use. Close it when done.
type Cluster struct {
	brokers []string
	fake    *kfake.Cluster // nil unless embedded

	// mu guards the clients, made on first use so a Cluster that is only
	// asked for its addresses opens no connection.
	mu     sync.Mutex
	keyed  *kgo.Client // admin calls and records partitioned by key
	even   *kgo.Client // records placed on the partition the caller chose
	closed bool
}

// Start returns the cluster named by KAFKA_BROKERS, or else starts an
// embedded one.
func Start() (*Cluster, error) {
	if env := os.Getenv(EnvBrokers); env != "" {
		return Connect(SplitBrokers(env)...)
	}
	return Embedded()
}

// New is Start for a test: it fails the test if no cluster can be had and
// closes the cluster when the test ends.
func New(t testing.TB) *Cluster {
	t.Helper()
	c, err := Start()
	if err != nil {
		t.Fatalf("kbatchtest: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// Embedded starts a kfake cluster of three brokers on loopback ports that
// creates topics on first use; opts are added after those defaults (e.g.
// kfake.SeedTopics, kfake.BrokerConfigs).
func Embedded(opts ...kfake.Opt) (*Cluster, error) {
	base := []kfake.Opt{kfake.NumBrokers(3), kfake.AllowAutoTopicCreation()}
	fake, err := kfake.NewCluster(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kbatchtest: starting kfake: %w", err)
	}
	return &Cluster{brokers: fake.ListenAddrs(), fake: fake}, nil
}

// Connect returns a Cluster for existing brokers. It does not dial them
// until a method needs to.
func Connect(brokers ...string) (*Cluster, error) {
	if len(brokers) == 0 {
		return nil, errors.New("kbatchtest: no brokers to connect to")
	}
	return &Cluster{brokers: append([]string(nil), brokers...)}, nil
}

// SplitBrokers splits a comma-separated broker list, dropping blanks.
func SplitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Brokers returns the seed brokers, e.g. for consumer.Config.Brokers.
func (c *Cluster) Brokers() []string { return append([]string(nil), c.brokers...) }

// Fake returns the embedded kfake cluster, for tests that inject faults
// with its Control functions; nil when the cluster is not embedded.
func (c *Cluster) Fake() *kfake.Cluster { return c.fake }

// Admin returns an admin client on the cluster. It stays usable until Close.
func (c *Cluster) Admin() (*kadm.Client, error) {
	cl, err := c.keyedClient()
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

// Close closes the clients the Cluster made and stops an embedded cluster.
// A second Close does nothing.
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	for _, cl := range []*kgo.Client{c.keyed, c.even} {
		if cl != nil {
			cl.Close()
		}
	}
	if c.fake != nil {
		c.fake.Close()
	}
}

var errClosed = errors.New("kbatchtest: cluster closed")

func (c *Cluster) keyedClient() (*kgo.Client, error) {
	return c.client(&c.keyed)
}

func (c *Cluster) evenClient() (*kgo.Client, error) {
	return c.client(&c.even, kgo.RecordPartitioner(kgo.ManualPartitioner()))
}

// client returns *slot, making it with opts on first use.
func (c *Cluster) client(slot **kgo.Client, opts ...kgo.Opt) (*kgo.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	if *slot != nil {
		return *slot, nil
	}
	base := []kgo.Opt{
		kgo.SeedBrokers(c.brokers...),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.MaxBufferedRecords(100_000),
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kbatchtest: making a client: %w", err)
	}
	*slot = cl
	return cl, nil
}
