package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Headers added to a dead-lettered record, after its own.
const (
	HeaderSourceTopic     = "kbatch-source-topic"
	HeaderSourcePartition = "kbatch-source-partition"
	HeaderSourceOffset    = "kbatch-source-offset"
	HeaderAttempts        = "kbatch-attempts"
	HeaderError           = "kbatch-error"
	HeaderTime            = "kbatch-time" // RFC 3339, UTC, when it was dead-lettered
)

// deadLetterWriter writes records to dead-letter topics through the
// consumer's own client (idempotent, acks=all by default). kgo leaves the
// group, running the revoke drain that may still dead-letter records, before
// it stops producing, so writes made while closing go through.
type deadLetterWriter struct {
	cfg     *DeadLetter
	cl      *kgo.Client
	mu      sync.Mutex
	ensured map[string]bool
}

func newDeadLetterWriter(cfg *DeadLetter, cl *kgo.Client) *deadLetterWriter {
	return &deadLetterWriter{cfg: cfg, cl: cl, ensured: map[string]bool{}}
}

// ensureTopic creates the dead-letter topic with the broker's defaults if it
// does not exist yet.
func (d *deadLetterWriter) ensureTopic(ctx context.Context, topic string) error {
	d.mu.Lock()
	ok := d.ensured[topic]
	d.mu.Unlock()
	if ok {
		return nil
	}
	resp, err := kadm.NewClient(d.cl).CreateTopic(ctx, -1, -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating dead-letter topic %q: %w", topic, err)
	}
	d.mu.Lock()
	d.ensured[topic] = true
	d.mu.Unlock()
	return nil
}

func (d *deadLetterWriter) write(ctx context.Context, r *kgo.Record, attempts int, reason string) error {
	topic := d.cfg.Topic(r.Topic)
	if err := d.ensureTopic(ctx, topic); err != nil {
		return err
	}
	out := &kgo.Record{
		Topic:   topic,
		Key:     r.Key,
		Value:   r.Value,
		Headers: make([]kgo.RecordHeader, 0, len(r.Headers)+6),
	}
	out.Headers = append(out.Headers, r.Headers...)
	out.Headers = append(out.Headers,
		kgo.RecordHeader{Key: HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		kgo.RecordHeader{Key: HeaderSourceOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
		kgo.RecordHeader{Key: HeaderAttempts, Value: strconv.AppendInt(nil, int64(attempts), 10)},
		kgo.RecordHeader{Key: HeaderError, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderTime, Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))},
	)
	return d.cl.ProduceSync(ctx, out).FirstErr()
}

// deadLetter writes r to its dead-letter topic and records it done in the
// dedupe store. Until the write succeeds the partition does not advance: it
// retries with backoff and reports false only when the worker must stop.
func (w *worker) deadLetter(r *kgo.Record, st *recState, attempts int, reason string) bool {
	c := w.c
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(w.ctx, c.cfg.CommitTimeout)
		err := c.deadLetters.write(ctx, r, attempts, reason)
		cancel()
		if err == nil {
			break
		}
		c.stats.deadLetterErrors.Add(1)
		if w.ctx.Err() != nil {
			return false
		}
		wait := backoff(c.cfg.Retry, attempt)
		c.cfg.Logger.Error("kbatch: dead-letter write failed, partition stalled", "partition", w.tp.String(),
			"offset", r.Offset, "attempt", attempt, "retry_in", wait, "err", err)
		if !w.sleep(wait) {
			return false
		}
	}
	c.stats.deadLettered.Add(1)
	c.cfg.Logger.Warn("kbatch: record dead-lettered", "partition", w.tp.String(), "offset", r.Offset,
		"attempts", attempts, "reason", reason)
	one := []recState{*st}
	if !w.markDone(one) {
		return false
	}
	st.done = true
	return true
}
