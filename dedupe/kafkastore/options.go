package kafkastore

import (
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/security"
)

// DefaultRetention is Options.Retention's default.
const DefaultRetention = 7 * 24 * time.Hour

// DefaultProducers is Options.Producers' default.
const DefaultProducers = 4

// DefaultDoneLinger is Options.DoneLinger's default.
const DefaultDoneLinger = 5 * time.Millisecond

// Options configures a Store. Brokers and Group (or TopicName) are required.
type Options struct {
	// Brokers are the seed brokers. Required.
	Brokers []string
	// Group is the consumer group the store serves; it names the changelog
	// topics. Required unless TopicName is set.
	Group string
	// TopicName returns the changelog topic of an input topic. Default:
	// "<Group>.<inputTopic>.kbatch-dedupe". Two groups consuming one topic
	// need two changelogs: their idempotency state differs.
	TopicName func(inputTopic string) string
	// Retention is how long an entry is kept after its last write: its
	// Expires is the write time plus Retention, and an entry past its
	// Expires is neither loaded nor returned. Default 7 days (DefaultRetention).
	Retention time.Duration
	// MaxKeys bounds the keys the store holds in memory per assigned
	// partition (a key done costs about 40 bytes: its 128-bit hash and its
	// expiry). Past it, the keys done that expire first are forgotten
	// (Stats.Evicted): a record of a forgotten key that comes again is
	// handed out again, as if its retention had passed. That is
	// at-least-once, never a loss. Zero means no bound but Retention; a
	// negative value is refused.
	MaxKeys int
	// ReplicationFactor of a changelog topic the store creates. 0 or -1:
	// the broker's default (default.replication.factor; Kafka 2.4+).
	ReplicationFactor int16
	// Producers is how many producer clients write the changelogs, each
	// changelog partition always through the same one (partition number
	// modulo Producers), so that its writes stay in order. A broker serves
	// one connection's requests one at a time, and every batch waits for
	// its Begin's write: with more than one, a broker serves several
	// partitions' writes at once. Each is a client of its own (its
	// connections, its producer ID). Default 4 (DefaultProducers); a
	// negative value is refused.
	Producers int
	// DoneLinger is how long a Done's records may wait in the client for
	// the partition's next write (the next batch's Begin), so that both
	// go to the broker in one produce request: a broker serves one
	// request of a connection at a time, and a Done sent alone made the
	// next Begin wait for two round trips. Begin and Mark never wait: they
	// send at once, with the Done records waiting. A Done that no write
	// follows is sent after DoneLinger. It widens the window in which a
	// crash hands a batch done out again (at least once) by as much.
	// Default 5ms (DefaultDoneLinger); negative: Done's records are sent
	// at once; above a minute is refused.
	DoneLinger time.Duration
	// Security is the connection's TLS and SASL, used by every client the
	// store makes (its producers, which also read the changelog at Assign
	// and in read-backs, and its admin client). Give it the consumer's
	// Config.Security. An invalid one is refused by New with an
	// *OptionsError for "Security". Default: plaintext without
	// authentication.
	Security security.Config
	// ClientOpts are extra options for the store's Kafka clients: dialer,
	// client ID, logger. They are applied after Security; the store's
	// own (seed brokers, the manual partitioner, acks=all, the partition to
	// read) come after them. Do not set consumer-group or transactional
	// options. The producer is idempotent unless these disable it.
	ClientOpts []kgo.Opt
	// Logger receives a warning for each malformed changelog record skipped
	// and for a changelog topic that is not compacted. Nil means silent.
	Logger *slog.Logger
	// Now is the clock that dates entries. Nil means time.Now; tests pass a
	// fake clock to exercise Retention without waiting.
	Now func() time.Time
}

func (o Options) validate() error {
	switch {
	case len(o.Brokers) == 0:
		return &OptionsError{"Brokers", "is empty"}
	case o.Group == "" && o.TopicName == nil:
		return &OptionsError{"Group", "is empty (it names the changelog topics unless TopicName is set)"}
	case o.Retention < 0:
		return &OptionsError{"Retention", "is negative"}
	case o.MaxKeys < 0:
		return &OptionsError{"MaxKeys", "is negative"}
	case o.ReplicationFactor < -1:
		return &OptionsError{"ReplicationFactor", "is below -1"}
	case o.Producers < 0:
		return &OptionsError{"Producers", "is negative"}
	case o.DoneLinger > time.Minute:
		return &OptionsError{"DoneLinger", "is above 1m, the client's bound on a linger"}
	}
	if err := o.Security.Validate(); err != nil {
		return &OptionsError{"Security", "is invalid: " + err.Error()}
	}
	return nil
}

// withDefaults returns o with every default filled in.
func (o Options) withDefaults() Options {
	if o.TopicName == nil {
		group := o.Group
		o.TopicName = func(input string) string { return group + "." + input + ".kbatch-dedupe" }
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.ReplicationFactor == 0 {
		o.ReplicationFactor = -1
	}
	if o.Producers == 0 {
		o.Producers = DefaultProducers
	}
	switch {
	case o.DoneLinger == 0:
		o.DoneLinger = DefaultDoneLinger
	case o.DoneLinger < 0:
		o.DoneLinger = 0
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}
