package consumer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/pkg/sasl"
)

// Headers added to a dead-lettered record, after its own (from which any
// header whose name starts with "kbatch-" is left out: those are kbatch's).
const (
	HeaderSourceTopic     = "kbatch-source-topic"
	HeaderSourcePartition = "kbatch-source-partition"
	HeaderSourceOffset    = "kbatch-source-offset"
	HeaderAttempts        = "kbatch-attempts"
	HeaderError           = "kbatch-error" // at most MaxErrorHeader bytes
	HeaderTime            = "kbatch-time"  // RFC 3339, UTC, when it was dead-lettered
)

const (
	// MaxErrorHeader bounds the kbatch-error header: a longer error is cut
	// (at a UTF-8 boundary) and ends with "...".
	MaxErrorHeader = 1024
	// brokerMaxMessageBytes is Kafka's default message.max.bytes, the limit
	// assumed for a source topic whose config cannot be read.
	brokerMaxMessageBytes = 1048588
	// deadLetterMargin is what a dead-lettered record may grow by: kbatch's
	// headers (the error header bounded above) and batch overhead.
	deadLetterMargin = 16 << 10
)

// deadLetterWriter writes records to dead-letter topics. Its topics are made
// to accept every record their source topic accepted: a dead-letter topic it
// creates gets the source's max.message.bytes plus a margin, and its producer
// (a client of its own, made on the first write with the member's
// connection options) batches up to the largest of those limits.
//
// An existing dead-letter topic is found through metadata first, so a member
// allowed only to write to it (no CREATE, and a cluster that answers
// CreateTopics with TOPIC_AUTHORIZATION_FAILED before "already exists") works.
type deadLetterWriter struct {
	cfg     *DeadLetter
	sources []string    // Config.Topics
	admin   *kgo.Client // the member's client, for metadata and admin calls
	opts    []kgo.Opt   // connection options for the producer, read back from admin

	mu      sync.Mutex
	ensured map[string]bool // dead-letter topics known to exist
	limit   int32           // producer batch limit; 0 until the producer is made
	prod    *kgo.Client
	closed  bool
}

// errDeadLetterProducer wraps a failure to make the dead-letter producer: its
// options are wrong, which no retry can mend.
var errDeadLetterProducer = errors.New("making the dead-letter producer")

func newDeadLetterWriter(cfg *DeadLetter, sources []string, admin *kgo.Client) *deadLetterWriter {
	return &deadLetterWriter{cfg: cfg, sources: sources, admin: admin, opts: connectionOpts(admin), ensured: map[string]bool{}}
}

// connectionOpts are the options that say how cl reaches the cluster (seed
// brokers, TLS, SASL, dialer, client ID, timeouts, versions, logger), read
// back from it: the dead-letter producer connects exactly as the member
// does, with Config.Security and what ClientOpts set, but without the
// member's hooks (a metrics plugin such as kprom registers once per client
// it is given, and refuses a second).
func connectionOpts(cl *kgo.Client) []kgo.Opt {
	var opts []kgo.Opt
	if v, ok := cl.OptValue(kgo.SeedBrokers).([]string); ok {
		opts = append(opts, kgo.SeedBrokers(v...))
	}
	if v, ok := cl.OptValue(kgo.DialTLSConfig).(*tls.Config); ok && v != nil {
		// kgo builds its own dialer from it: copying that too is refused.
		opts = append(opts, kgo.DialTLSConfig(v))
	} else if v, ok := cl.OptValue(kgo.Dialer).(func(context.Context, string, string) (net.Conn, error)); ok && v != nil {
		opts = append(opts, kgo.Dialer(v))
	}
	if v, ok := cl.OptValue(kgo.SASL).([]sasl.Mechanism); ok && len(v) > 0 {
		opts = append(opts, kgo.SASL(v...))
	}
	if vs := cl.OptValues(kgo.ClientID); len(vs) == 2 {
		if id, set := vs[0].(string), vs[1].(bool); set {
			opts = append(opts, kgo.ClientID(id))
		}
	}
	if v, ok := cl.OptValue(kgo.DialTimeout).(time.Duration); ok && v > 0 {
		opts = append(opts, kgo.DialTimeout(v))
	}
	if v, ok := cl.OptValue(kgo.RequestTimeoutOverhead).(time.Duration); ok && v > 0 {
		opts = append(opts, kgo.RequestTimeoutOverhead(v))
	}
	if v, ok := cl.OptValue(kgo.MaxVersions).(*kversion.Versions); ok && v != nil {
		opts = append(opts, kgo.MaxVersions(v))
	}
	if v, ok := cl.OptValue(kgo.MinVersions).(*kversion.Versions); ok && v != nil {
		opts = append(opts, kgo.MinVersions(v))
	}
	if v, ok := cl.OptValue(kgo.WithLogger).(kgo.Logger); ok && v != nil {
		opts = append(opts, kgo.WithLogger(v))
	}
	return opts
}

// maxMessageBytes reads a topic's max.message.bytes; ok is false when it
// cannot be read (no DESCRIBE_CONFIGS right, unknown topic).
func (d *deadLetterWriter) maxMessageBytes(ctx context.Context, topic string) (int32, bool) {
	rcs, err := kadm.NewClient(d.admin).DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return 0, false
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		return 0, false
	}
	for _, c := range rc.Configs {
		if c.Key == "max.message.bytes" {
			v, err := strconv.ParseInt(c.MaybeValue(), 10, 32)
			if err == nil && v > 0 {
				return int32(v), true
			}
		}
	}
	return 0, false
}

// sourceLimit is the largest record the source topic accepts.
func (d *deadLetterWriter) sourceLimit(ctx context.Context, source string) int32 {
	if v, ok := d.maxMessageBytes(ctx, source); ok {
		return v
	}
	return brokerMaxMessageBytes
}

// ensureTopic makes sure the dead-letter topic of source exists: metadata
// first, then CreateTopics with the source's max.message.bytes plus a margin.
func (d *deadLetterWriter) ensureTopic(ctx context.Context, source, topic string) error {
	d.mu.Lock()
	ok := d.ensured[topic]
	d.mu.Unlock()
	if ok {
		return nil
	}
	adm := kadm.NewClient(d.admin)
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("looking up dead-letter topic %q: %w", topic, err)
	}
	if td, found := details[topic]; found && td.Err == nil {
		d.markEnsured(topic)
		return nil
	} else if found && !errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("looking up dead-letter topic %q: %w", topic, td.Err)
	}
	limit := int64(d.sourceLimit(ctx, source)) + deadLetterMargin
	configs := map[string]*string{"max.message.bytes": kadm.StringPtr(strconv.FormatInt(limit, 10))}
	resp, err := adm.CreateTopic(ctx, -1, -1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating dead-letter topic %q: %w", topic, err)
	}
	d.markEnsured(topic)
	return nil
}

func (d *deadLetterWriter) markEnsured(topic string) {
	d.mu.Lock()
	d.ensured[topic] = true
	d.mu.Unlock()
}

// producer returns the dead-letter producer, making it on first use with a
// batch limit that fits the largest record any source topic accepts.
func (d *deadLetterWriter) producer(ctx context.Context) (*kgo.Client, error) {
	d.mu.Lock()
	p, closed := d.prod, d.closed
	d.mu.Unlock()
	if closed {
		return nil, kgo.ErrClientClosed
	}
	if p != nil {
		return p, nil
	}
	limit := int32(brokerMaxMessageBytes)
	for _, s := range d.sources {
		limit = max(limit, d.sourceLimit(ctx, s))
	}
	limit += deadLetterMargin
	opts := append([]kgo.Opt{}, d.opts...)
	opts = append(opts, kgo.ProducerBatchMaxBytes(limit), kgo.RequiredAcks(kgo.AllISRAcks()))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errDeadLetterProducer, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		cl.Close()
		return nil, kgo.ErrClientClosed
	}
	if d.prod != nil { // made concurrently
		cl.Close()
		return d.prod, nil
	}
	d.prod, d.limit = cl, limit
	return cl, nil
}

// close closes the producer; writes after it fail.
func (d *deadLetterWriter) close() {
	d.mu.Lock()
	p := d.prod
	d.prod, d.closed = nil, true
	d.mu.Unlock()
	if p != nil {
		p.Close()
	}
}

func (d *deadLetterWriter) write(ctx context.Context, r *kgo.Record, attempts int, reason string) error {
	topic := d.cfg.Topic(r.Topic)
	if err := d.ensureTopic(ctx, r.Topic, topic); err != nil {
		return err
	}
	p, err := d.producer(ctx)
	if err != nil {
		return err
	}
	out := &kgo.Record{
		Topic:   topic,
		Key:     r.Key,
		Value:   r.Value,
		Headers: make([]kgo.RecordHeader, 0, len(r.Headers)+6),
	}
	// The record's own headers, but none named like kbatch's: a producer
	// could forge them, and a reader takes the first of a name.
	for _, h := range r.Headers {
		if !strings.HasPrefix(h.Key, "kbatch-") {
			out.Headers = append(out.Headers, h)
		}
	}
	out.Headers = append(out.Headers,
		kgo.RecordHeader{Key: HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		kgo.RecordHeader{Key: HeaderSourceOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
		kgo.RecordHeader{Key: HeaderAttempts, Value: strconv.AppendInt(nil, int64(attempts), 10)},
		kgo.RecordHeader{Key: HeaderError, Value: []byte(truncate(reason, MaxErrorHeader))},
		kgo.RecordHeader{Key: HeaderTime, Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))},
	)
	return p.ProduceSync(ctx, out).FirstErr()
}

// truncate cuts s to at most n bytes at a UTF-8 boundary, ending with "..."
// when it was cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// deadLetter writes r to its dead-letter topic and records it done in the
// dedupe store. Until the write succeeds the partition does not advance: it
// retries with backoff and reports false only when the worker must stop.
func (w *worker) deadLetter(r *kgo.Record, st *recState, attempts int, reason string) bool {
	c := w.c
	// A write the cluster refuses for authorization (no WRITE on the
	// topic, no DESCRIBE to find it, no CREATE to make it) cannot pass
	// by waiting: Run stops with it. The record stays uncommitted.
	refused := func(err error) bool {
		if !isFatal(err) && !errors.Is(err, errDeadLetterProducer) {
			return false
		}
		c.fail(fmt.Errorf("kbatch: cannot dead-letter %s offset %d: %w", w.tp, r.Offset, err))
		return true
	}
	ok := w.retry("dead-letter write", &c.stats.deadLetterErrors, refused, func() error {
		ctx, cancel := context.WithTimeout(w.ctx, c.cfg.CommitTimeout)
		defer cancel()
		return c.deadLetters.write(ctx, r, attempts, reason)
	})
	if !ok {
		return false
	}
	c.stats.deadLettered.Add(1)
	w.topic.deadLettered.Add(1)
	c.sampler.log(c.cfg.Logger, slog.LevelWarn, "dlq "+w.tp.String(), "kbatch: record dead-lettered",
		"partition", w.tp.String(), "offset", r.Offset, "attempts", attempts, "reason", truncate(reason, MaxErrorHeader))
	return c.gate.markOneDone(w, st)
}
