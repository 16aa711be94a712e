package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/offsets"
	"github.com/kbatch/kbatch/security"
)

// Reset says where a partition with no committed offset starts.
type Reset int

const (
	// ResetEarliest starts at the log start offset (Java: auto.offset.reset=earliest).
	// The default, as for Kafka Connect sinks: nothing produced before the
	// group first joined is skipped.
	ResetEarliest Reset = iota
	// ResetLatest starts at the end of the log (Java: auto.offset.reset=latest).
	ResetLatest
)

// Protocol is the consumer group protocol.
type Protocol int

const (
	// ProtocolClassic is the classic group protocol with the
	// cooperative-sticky assignor (Java: partition.assignment.strategy=
	// CooperativeStickyAssignor). The default.
	ProtocolClassic Protocol = iota
	// ProtocolConsumer is the KIP-848 protocol (Java: group.protocol=consumer):
	// the broker assigns partitions. Needs Kafka 4.0+; 4.3+ recommended.
	ProtocolConsumer
)

func (p Protocol) String() string {
	switch p {
	case ProtocolClassic:
		return "classic"
	case ProtocolConsumer:
		return "consumer"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// Retry is the retry policy of a failing batch.
type Retry struct {
	// Initial is the wait before the second attempt. Default 100ms.
	Initial time.Duration
	// Max caps the wait, which doubles after each failure (±20% jitter).
	// Default 10s.
	Max time.Duration
	// MaxAttempts is how many times a record may be handed to the handler.
	// A record past it goes to the dead-letter topic instead. It needs
	// DeadLetter; with a Dedupe store the count is durable, so it also stops
	// a record that crashes the whole process each time. 0 means retry for
	// ever. Default 0, or 5 when DeadLetter is set.
	MaxAttempts int
}

// DeadLetter configures the dead-letter topic: where records go that failed
// Retry.MaxAttempts times or with a Permanent error. A record is written there
// as it was (key, value, headers) plus headers naming its source topic,
// partition, offset, attempts, last error and time; only then does its offset
// pass the commit. If the write fails, the partition stops advancing and
// retries it.
//
// The dead-letter topic accepts every record its source accepted: when
// kbatch creates it (only if metadata does not show it already, so a member
// allowed only to write to an existing topic works), it gets the source's
// max.message.bytes plus 16 KiB for kbatch's headers, and the dead-letter
// producer batches up to the largest source limit. The kbatch-error header
// is cut to MaxErrorHeader bytes.
type DeadLetter struct {
	// Topic names the dead-letter topic of a source topic. Default
	// "<topic>.dlq". The topic is created (broker defaults but
	// max.message.bytes, see above) if missing.
	Topic func(source string) string
}

// Dedupe configures idempotency keys.
type Dedupe struct {
	// Store keeps the entries. Required to enable dedupe.
	Store dedupe.Store
	// Header is the record header holding the key. Default
	// dedupe.DefaultHeader ("Idempotency-Key").
	Header string
	// Key, if set, computes a record's key first; records it gives no key
	// fall back to the header, then to topic/partition/offset.
	Key dedupe.KeyFunc
}

// Ordering says which records of a partition may be handled at the same time.
type Ordering int

const (
	// ByPartition hands a partition's records to the handler in offset
	// order, one batch at a time: batch k+1 starts only after batch k
	// finished. The default.
	ByPartition Ordering = iota
	// ByKey keeps the order of the records of one key (the record key)
	// and handles different keys of a partition in parallel, on up to
	// Concurrency goroutines per partition. A batch holds records of one
	// key only, in offset order, so a failing record holds back its key
	// alone; the batch takes every record of its key that is ready (no
	// MaxWait). Records with no key are one key. The commit is the
	// contiguous watermark; records completed beyond it are named in the
	// commit metadata so that a restart skips them.
	ByKey
	// Resequence runs Config.Process on the records of a partition
	// concurrently, on up to Concurrency goroutines per partition, in any
	// order, and hands their results to the handler in offset order
	// (Batch.Result): the handler is the in-order step. A batch is the run
	// of records whose results are ready, in offset order (no MaxWait).
	Resequence
)

func (o Ordering) String() string {
	switch o {
	case ByPartition:
		return "partition"
	case ByKey:
		return "key"
	case Resequence:
		return "resequence"
	}
	return fmt.Sprintf("Ordering(%d)", int(o))
}

// ProcessFunc is the concurrent step of the Resequence ordering: it computes
// the result of one record, which the handler then reads in offset order
// with Batch.Result. It may run more than once for a record (a retry, a
// restart), so it should have no effect beyond its result. ctx is cancelled
// when the partition is lost or the consumer closes.
type ProcessFunc func(ctx context.Context, r *kgo.Record) (any, error)

// Config configures a Consumer. The zero value of every optional field means
// its default; defaults are filled in by New.
type Config struct {
	// Brokers are the seed brokers, host:port. Required.
	// (Java: bootstrap.servers)
	Brokers []string
	// Group is the consumer group. Required. (Java: group.id)
	Group string
	// Topics are consumed. Required; each a valid Kafka topic name (at most
	// 249 of [a-zA-Z0-9._-], not "." or ".."). A topic that does not exist
	// yet is waited for (Stats.MissingTopics); one this member may not
	// read makes Run return an error.
	Topics []string

	// Batch cuts batches. Each zero field gets its default: MaxRecords
	// 1000, MaxBytes 4 MiB, MaxWait 200ms measured from a batch's first
	// record. A negative MaxBytes or MaxWait turns that limit off; with
	// MaxWait off, open batches are still closed when the buffer is full
	// (FlushBuffer) or when no record arrived for IdleFlush (FlushIdle).
	// Either way, the open batch of a partition that was behind and caught
	// up (a poll reached its high watermark) is closed at once
	// (FlushCaughtUp): the end of a backlog does not wait for MaxWait.
	Batch batcher.Policy
	// Commit is the commit window. Each zero field gets its default:
	// EveryRecords 50000, Interval 5s (Java: auto.commit.interval.ms=5000).
	// A negative value turns that trigger off (not both). Commits also
	// happen on every revoke and on close.
	Commit offsets.Policy
	// CommitTimeout bounds one commit request. Default 10s.
	CommitTimeout time.Duration
	// Reset is where a partition without a committed offset starts.
	// Default ResetEarliest.
	Reset Reset
	// Protocol is the group protocol. Default ProtocolClassic.
	Protocol Protocol

	// MaxBufferedRecords bounds the records this member holds (fetched and
	// not yet handled, across all its partitions): polling stops at the
	// bound. When the buffer is full, the largest open batches are closed
	// at once (FlushBuffer), so records keep moving whatever the partition
	// count: with many partitions the batches are smaller (about
	// MaxBufferedRecords / partitions), never stalled. When handlers are
	// slow (the poll loop waited 50ms for room), the partitions holding more
	// than their share are paused so that the others get the room; they
	// resume at half their share. Default 100000: batches then stay about
	// 100 records or more up to 1000 busy partitions, and the per-record
	// bookkeeping (about 170 bytes a record) under 17 MiB.
	MaxBufferedRecords int
	// MaxBufferedBytes bounds the bytes (keys plus values) of those records.
	// Polls ask for as many records as the bound has room for at the
	// average record size seen, so one poll can pass it by the spread of
	// record sizes. The client's own fetch buffer is sized from it too:
	// kbatch asks for fetches of at most MaxBufferedBytes/4 decompressed
	// (divided by the compression ratio it measures and by the brokers),
	// so the record data a member holds stays within 1.25 x
	// MaxBufferedBytes. A member owning so many partitions that this would
	// bring less than 32 KiB of each asks for 32 KiB a partition, up to
	// MaxBufferedBytes/2 (1.5 x in all): each fetch costs the broker a pass
	// over every partition. Not counted: about 170 bytes of bookkeeping per
	// record held, and the Go runtime's own overhead (see the README's
	// memory section). Default 64 MiB.
	MaxBufferedBytes int

	// DrainTimeout bounds how long a revoke or a close waits for the batches
	// in flight before cancelling their context. A handler that still has
	// not returned one second after that is abandoned: the revoke or close
	// goes on without it, nothing it completes is committed by this member
	// (the next owner handles its records again), and Stats.Abandoned counts
	// it. Close therefore returns within DrainTimeout + CommitTimeout + 6s,
	// even when the group coordinator stops answering (the final commit and
	// the LeaveGroup are then given up: the next owner reads again what was
	// not committed, and the group drops the member when its session times
	// out). Keep it well under the rebalance timeout (60s by default) or
	// the member is kicked out of the group. Default 10s.
	DrainTimeout time.Duration
	// StallTimeout is how long a partition may have records waiting
	// without its watermark moving (a handler stuck or failing, a
	// dead-letter write failing) before Health reports the consumer not
	// live. Default 5m; negative: never.
	StallTimeout time.Duration
	// Retry is the backoff between attempts of a failing batch. A batch is
	// retried until it succeeds or its partition is revoked, lost or closed;
	// the other partitions go on meanwhile.
	Retry Retry

	// Ordering is what may run at the same time within a partition.
	// Default ByPartition. See docs/ordering.md.
	Ordering Ordering
	// Concurrency is how many goroutines handle one partition's records
	// at the same time with ByKey (handler calls) or Resequence (Process
	// calls; the handler stays one at a time). Default 16 with those;
	// must be 0 or 1 with ByPartition.
	Concurrency int
	// Process is the concurrent step of Resequence, required with it and
	// refused with the other orderings. A Process error is retried with
	// Retry's backoff (each failure counts in Stats.HandlerErrors); a
	// Permanent one is not: Batch.Result gives it to the handler.
	Process ProcessFunc
	// StartOffsets, if set, says where newly assigned partitions start:
	// for a handler that stores its results together with the next offset
	// to handle in one transaction of its sink (offsets stored in the
	// sink: an exactly-once effect), the sink, not Kafka's committed
	// offset, is the truth. (Java: a ConsumerRebalanceListener whose
	// onPartitionsAssigned seeks; Spring: ConsumerSeekAware.)
	//
	// It is called from the group's assign callback, before any record of
	// the partitions is fetched, with the partitions assigned (and those
	// started again after a fenced commit) and their fencing token; it may
	// also claim them in the sink under that token (see FencingToken), so
	// that from then on the sink refuses the previous owner. It returns
	// the next offset to handle per partition; a partition left out, or
	// given a negative offset, starts from Kafka's committed offset (or
	// Reset). An offset outside the log is reset like a committed one. It
	// must not return partitions it was not given.
	//
	// A failing call is retried with the Retry backoff for at most
	// DrainTimeout (it holds the rebalance meanwhile); then Run stops and
	// returns the error, having handled nothing of those partitions.
	// Kafka commits go on as usual, for lag tools: a start offset ahead of
	// Kafka's committed one and inside the log is committed at the next
	// window even if no record follows. Default nil: partitions start from
	// Kafka's committed offset.
	StartOffsets StartOffsetsFunc

	// DeadLetter enables the dead-letter topic. Default nil: disabled, a
	// failing record is retried for ever and holds its partition.
	DeadLetter *DeadLetter
	// Dedupe enables idempotency keys: records already done are not handed
	// to the handler again, and each record's attempts (the dequeue count)
	// and markers (finished steps) come with it. Default: disabled.
	Dedupe *Dedupe

	// Logger receives the consumer's logs. Default: slog.Default(), so
	// that a warning about a failing batch reaches someone. Lines that can
	// repeat per record or per retry (dead-lettered records, failing
	// batches) are logged at most once per partition every 10s, with a
	// count of those left out.
	Logger *slog.Logger
	// ClientLogLevel is the lowest level of franz-go's own lines passed to
	// Logger. Default slog.LevelWarn (kgo's INFO lines about connections
	// and group joins stay out); set slog.LevelDebug to see them all.
	ClientLogLevel *slog.Level
	// Security is the connection's TLS and SASL (Java: security.protocol,
	// ssl.*, sasl.*), used by every client the consumer makes: the group
	// member (and the admin calls made through it) and the dead-letter
	// producers. It is applied before ClientOpts. An invalid one is refused
	// by New with a *ConfigError for "Security". Default: the zero
	// security.Config, plaintext without authentication.
	Security security.Config
	// ClientOpts are passed to kgo.NewClient after kbatch's own options, to
	// set TLS, SASL, client id, session timeout and the like. Options that
	// kbatch must control (group callbacks, auto-commit, BlockRebalanceOnPoll)
	// are overridden by kbatch.
	ClientOpts []kgo.Opt
}

// Defaults.
const (
	DefaultMaxRecords         = 1000
	DefaultMaxBytes           = 4 << 20
	DefaultMaxWait            = 200 * time.Millisecond
	DefaultCommitEveryRecords = 50000
	DefaultCommitInterval     = 5 * time.Second
	DefaultCommitTimeout      = 10 * time.Second
	DefaultMaxBufferedRecords = 100000
	DefaultMaxBufferedBytes   = 64 << 20
	DefaultDrainTimeout       = 10 * time.Second
	DefaultStallTimeout       = 5 * time.Minute
	DefaultRetryInitial       = 100 * time.Millisecond
	DefaultRetryMax           = 10 * time.Second
	DefaultMaxAttempts        = 5
	DefaultConcurrency        = 16
)

// withDefaults returns cfg with every zero optional field set to its default.
func (cfg Config) withDefaults() Config {
	if cfg.Batch.MaxRecords == 0 {
		cfg.Batch.MaxRecords = DefaultMaxRecords
	}
	cfg.Batch.MaxBytes = orDefault(cfg.Batch.MaxBytes, DefaultMaxBytes)
	cfg.Batch.MaxWait = orDefault(cfg.Batch.MaxWait, DefaultMaxWait)
	cfg.Commit.EveryRecords = orDefault(cfg.Commit.EveryRecords, DefaultCommitEveryRecords)
	cfg.Commit.Interval = orDefault(cfg.Commit.Interval, DefaultCommitInterval)
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	if cfg.MaxBufferedRecords == 0 {
		cfg.MaxBufferedRecords = DefaultMaxBufferedRecords
	}
	if cfg.MaxBufferedBytes == 0 {
		cfg.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	cfg.StallTimeout = orDefault(cfg.StallTimeout, DefaultStallTimeout)
	if cfg.Retry.Initial == 0 {
		cfg.Retry.Initial = DefaultRetryInitial
	}
	if cfg.Retry.Max == 0 {
		cfg.Retry.Max = DefaultRetryMax
	}
	if cfg.DeadLetter != nil {
		dl := *cfg.DeadLetter
		if dl.Topic == nil {
			dl.Topic = func(source string) string { return source + ".dlq" }
		}
		cfg.DeadLetter = &dl
		if cfg.Retry.MaxAttempts == 0 {
			cfg.Retry.MaxAttempts = DefaultMaxAttempts
		}
	}
	if cfg.Dedupe != nil {
		d := *cfg.Dedupe
		if d.Header == "" {
			d.Header = dedupe.DefaultHeader
		}
		cfg.Dedupe = &d
	}
	if cfg.Concurrency == 0 && (cfg.Ordering == ByKey || cfg.Ordering == Resequence) {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.ClientLogLevel == nil {
		warn := slog.LevelWarn
		cfg.ClientLogLevel = &warn
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

// orDefault maps zero to def and a negative value to zero, the "off" of the
// batcher and offsets policies.
func orDefault[T int | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// validate names the first invalid field. It runs after withDefaults.
func (cfg Config) validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if len(cfg.Brokers) == 0 {
		return bad("Brokers", "at least one seed broker is required")
	}
	for i, b := range cfg.Brokers {
		if b == "" {
			return bad(fmt.Sprintf("Brokers[%d]", i), "empty address")
		}
	}
	if cfg.Group == "" {
		return bad("Group", "a consumer group is required")
	}
	if len(cfg.Topics) == 0 {
		return bad("Topics", "at least one topic is required")
	}
	seen := map[string]bool{}
	for i, t := range cfg.Topics {
		if reason := invalidTopic(t); reason != "" {
			return bad(fmt.Sprintf("Topics[%d]", i), "%q is not a valid Kafka topic name: %s", t, reason)
		}
		if seen[t] {
			return bad(fmt.Sprintf("Topics[%d]", i), "topic %q listed twice", t)
		}
		seen[t] = true
	}
	if err := cfg.Batch.Validate(); err != nil {
		return &ConfigError{Field: "Batch", Reason: err.Error()}
	}
	if err := cfg.Commit.Validate(); err != nil {
		return &ConfigError{Field: "Commit", Reason: err.Error()}
	}
	if cfg.CommitTimeout < 0 {
		return bad("CommitTimeout", "must be > 0, got %s", cfg.CommitTimeout)
	}
	if cfg.Reset != ResetEarliest && cfg.Reset != ResetLatest {
		return bad("Reset", "unknown reset policy %d", cfg.Reset)
	}
	if cfg.Protocol != ProtocolClassic && cfg.Protocol != ProtocolConsumer {
		return bad("Protocol", "unknown group protocol %d", cfg.Protocol)
	}
	if cfg.MaxBufferedRecords < 0 {
		return bad("MaxBufferedRecords", "must be > 0, got %d", cfg.MaxBufferedRecords)
	}
	if cfg.MaxBufferedRecords < cfg.Batch.MaxRecords {
		return bad("MaxBufferedRecords", "%d is below Batch.MaxRecords %d: a full batch could never be buffered", cfg.MaxBufferedRecords, cfg.Batch.MaxRecords)
	}
	if cfg.MaxBufferedBytes < 0 {
		return bad("MaxBufferedBytes", "must be > 0, got %d", cfg.MaxBufferedBytes)
	}
	if cfg.DrainTimeout < 0 {
		return bad("DrainTimeout", "must be > 0, got %s", cfg.DrainTimeout)
	}
	if cfg.Retry.Initial < 0 {
		return bad("Retry.Initial", "must be > 0, got %s", cfg.Retry.Initial)
	}
	if cfg.Retry.Max < cfg.Retry.Initial {
		return bad("Retry.Max", "%s is below Retry.Initial %s", cfg.Retry.Max, cfg.Retry.Initial)
	}
	if cfg.Retry.MaxAttempts < 0 {
		return bad("Retry.MaxAttempts", "must be >= 0, got %d", cfg.Retry.MaxAttempts)
	}
	if cfg.Retry.MaxAttempts > 0 && cfg.DeadLetter == nil {
		return bad("Retry.MaxAttempts", "needs DeadLetter: a record past its attempts would have nowhere to go")
	}
	if cfg.DeadLetter != nil {
		for _, t := range cfg.Topics {
			d := cfg.DeadLetter.Topic(t)
			if d == t {
				return bad("DeadLetter.Topic", "gives the source topic %q itself", t)
			}
			if reason := invalidTopic(d); reason != "" {
				return bad("DeadLetter.Topic", "gives %q for source topic %q, not a valid Kafka topic name: %s", d, t, reason)
			}
		}
	}
	switch cfg.Ordering {
	case ByPartition, ByKey, Resequence:
	default:
		return bad("Ordering", "unknown ordering %d", cfg.Ordering)
	}
	if cfg.Concurrency < 0 {
		return bad("Concurrency", "must be > 0, got %d", cfg.Concurrency)
	}
	if cfg.Ordering == ByPartition && cfg.Concurrency > 1 {
		return bad("Concurrency", "%d needs Ordering ByKey or Resequence: ByPartition handles one batch per partition at a time", cfg.Concurrency)
	}
	if cfg.Ordering == Resequence && cfg.Process == nil {
		return bad("Process", "required with Ordering Resequence")
	}
	if cfg.Ordering != Resequence && cfg.Process != nil {
		return bad("Process", "only used with Ordering Resequence, got %s", cfg.Ordering)
	}
	if cfg.Dedupe != nil && cfg.Dedupe.Store == nil {
		return bad("Dedupe.Store", "a store is required when Dedupe is set")
	}
	return nil
}

// invalidTopic says why Kafka would refuse t as a topic name, or "" if it
// would not: at most 249 characters of [a-zA-Z0-9._-], neither "." nor "..".
func invalidTopic(t string) string {
	switch {
	case t == "":
		return "empty"
	case t == "." || t == "..":
		return `"." and ".." are not allowed`
	case len(t) > 249:
		return fmt.Sprintf("%d characters, at most 249 are allowed", len(t))
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Sprintf("character %q; only ASCII letters, digits, '.', '_' and '-' are allowed", r)
		}
	}
	return ""
}

// ConfigError is returned by New for an invalid Config; Field names the
// offending field.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return "kbatch: invalid Config." + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidConfig) true for every ConfigError.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }
