// Command member is one member of the chaos suite's consumer group. It runs a
// kbatch consumer and appends every record it handles to its ledger file, one
// line per record:
//
//	<partition> <offset> <generation> <member id> <key>
//
// The lines of a batch are written through to the file (one write(2) per
// batch) before the handler returns, so a SIGKILL loses nothing that was
// handled; a line cut by the kill can only be the file's last. The
// generation and member id are the group's as kgo saw them when the batch
// was handled (the member epoch under KIP-848); the member id is followed by
// "#" and the number of group sessions the member had joined then
// (Stats.Rebalances, one per assign callback), so that every session starts
// a new ownership run even if the group's generation did not change: a
// partition assigned in a session starts from the committed offset.
//
// SIGTERM (or SIGINT) makes the member call Close: drain, commit, leave the
// group, then exit 0. Every 500 ms, and at exit, it writes its consumer
// Stats as JSON to -stats (temp file + rename, so a reader never sees half).
// While a JoinGroup request of the member is on the wire or waiting for its
// answer, the file <-stats>.joining exists: the driver does not kill or stop
// a member then on the embedded broker (see joinMarker).
//
// The chaos test (chaos/chaos_test.go) builds and drives it; by hand:
//
//	go run ./chaos/member -brokers 127.0.0.1:9092 -group g -topic t -ledger /tmp/m1.ledger
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/dedupe/kafkastore"
	"github.com/kbatch/kbatch/offsets"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "member:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		brokers    = flag.String("brokers", "", "comma-separated seed brokers (required)")
		group      = flag.String("group", "", "consumer group (required)")
		topic      = flag.String("topic", "", "topic to consume (required)")
		protocol   = flag.String("protocol", "classic", "group protocol: classic or consumer (KIP-848)")
		ledgerPath = flag.String("ledger", "", "ledger file to create (required; must not exist)")
		statsPath  = flag.String("stats", "", "file to keep the consumer's Stats in, as JSON (optional)")
		name       = flag.String("name", "member", "client id, for the broker's logs")
		rate       = flag.Float64("rate", 0, "records per second this member handles at most (a stand-in for a sink's cost); 0: no limit")
		session    = flag.Duration("session", 6*time.Second, "classic protocol session timeout (KIP-848 takes the broker's)")
		heartbeat  = flag.Duration("heartbeat", 500*time.Millisecond, "classic protocol heartbeat interval")
		maxRecords = flag.Int("batch", 500, "Batch.MaxRecords")
		useDedupe  = flag.Bool("dedupe", false, "use the Kafka dedupe store: records done are not handed out again")
		ordering   = flag.String("ordering", "partition", "partition (one batch per partition at a time) or key (ByKey lanes)")
		lanes      = flag.Int("concurrency", 8, "Concurrency with -ordering key")
		verbose    = flag.Bool("v", true, "log assignments and kgo info to stderr")
	)
	flag.Parse()
	if *brokers == "" || *group == "" || *topic == "" || *ledgerPath == "" {
		flag.Usage()
		return errors.New("-brokers, -group, -topic and -ledger are required")
	}
	var proto consumer.Protocol
	switch *protocol {
	case "classic":
		proto = consumer.ProtocolClassic
	case "consumer":
		proto = consumer.ProtocolConsumer
	default:
		return fmt.Errorf("unknown -protocol %q (classic or consumer)", *protocol)
	}

	var order consumer.Ordering
	conc := 0
	switch *ordering {
	case "partition":
	case "key":
		order, conc = consumer.ByKey, *lanes
	default:
		return fmt.Errorf("unknown -ordering %q (partition or key)", *ordering)
	}

	f, err := os.OpenFile(*ledgerPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	led := &ledger{f: f, w: bufio.NewWriterSize(f, 1<<20)}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	pace := newPacer(*rate)

	var c *consumer.Consumer
	handler := func(ctx context.Context, b *consumer.Batch) error {
		// The sink's work comes first; the ledger line is the side effect
		// that says "handled", written only if the work finished.
		if err := pace.wait(ctx, len(b.Records)); err != nil {
			return err
		}
		member, gen := c.Client().GroupMetadata()
		return led.write(b, gen, member+"#"+strconv.FormatInt(c.Stats().Rebalances, 10))
	}
	var dd *consumer.Dedupe
	if *useDedupe {
		store, err := kafkastore.New(kafkastore.Options{Brokers: strings.Split(*brokers, ","), Group: *group})
		if err != nil {
			_ = f.Close()
			return err
		}
		defer store.Close()
		dd = &consumer.Dedupe{Store: store}
	}
	c, err = consumer.New(consumer.Config{
		Dedupe:       dd,
		Brokers:      strings.Split(*brokers, ","),
		Group:        *group,
		Topics:       []string{*topic},
		Protocol:     proto,
		Ordering:     order,
		Concurrency:  conc,
		Batch:        batcher.Policy{MaxRecords: *maxRecords, MaxWait: 100 * time.Millisecond},
		Commit:       offsets.Policy{EveryRecords: 10000, Interval: time.Second},
		DrainTimeout: 5 * time.Second,
		Logger:       logger,
		ClientOpts: []kgo.Opt{
			kgo.ClientID(*name),
			kgo.SessionTimeout(*session),
			kgo.HeartbeatInterval(*heartbeat),
			kgo.WithHooks(newJoinMarker(*statsPath)),
		},
	}, handler)
	if err != nil {
		_ = f.Close()
		return err
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sig)
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case s := <-sig:
			logger.Info("member: signal, closing", "signal", s.String())
			_ = c.Close() // drain, commit, leave; Run returns
		case <-stopped:
		}
	}()

	statsDone := make(chan struct{})
	statsStop := make(chan struct{})
	go func() {
		defer close(statsDone)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				writeStats(*statsPath, c.Stats(), logger)
			case <-statsStop:
				return
			}
		}
	}()

	runErr := c.Run(context.Background())
	close(statsStop)
	<-statsDone
	st := c.Stats()
	writeStats(*statsPath, st, logger)
	if err := led.close(); err != nil && runErr == nil {
		runErr = err
	}
	logger.Info("member: done", "records", st.Records, "batches", st.Batches, "commits", st.Commits,
		"rebalances", st.Rebalances, "lost", st.PartitionsLost, "revoked", st.PartitionsRevoked)
	return runErr
}

// ledger appends handled records to a file. Workers of different partitions
// call write concurrently; the lock keeps each batch's lines together.
type ledger struct {
	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	buf []byte
	err error
}

func (l *ledger) write(b *consumer.Batch, gen int32, member string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	buf := l.buf[:0]
	for _, r := range b.Records {
		buf = strconv.AppendInt(buf, int64(r.Partition), 10)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, r.Offset, 10)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, int64(gen), 10)
		buf = append(buf, ' ')
		buf = append(buf, member...)
		buf = append(buf, ' ')
		buf = append(buf, r.Key...)
		buf = append(buf, '\n')
	}
	l.buf = buf
	if _, err := l.w.Write(buf); err != nil {
		l.err = fmt.Errorf("ledger: %w", err)
		return l.err
	}
	if err := l.w.Flush(); err != nil {
		l.err = fmt.Errorf("ledger: %w", err)
		return l.err
	}
	return nil
}

func (l *ledger) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.w.Flush()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// pacer lets through at most rate records per second across the member's
// partitions: each batch reserves its share of time and waits for the end of
// it, as a sink that takes 1/rate seconds per record would.
type pacer struct {
	per  time.Duration // per record; 0 means no limit
	mu   sync.Mutex
	next time.Time
}

func newPacer(rate float64) *pacer {
	if rate <= 0 {
		return &pacer{}
	}
	return &pacer{per: time.Duration(float64(time.Second) / rate)}
}

func (p *pacer) wait(ctx context.Context, n int) error {
	if p.per == 0 {
		return ctx.Err()
	}
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	p.next = p.next.Add(time.Duration(n) * p.per)
	until := p.next
	p.mu.Unlock()
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeStats replaces path with the stats as JSON.
func writeStats(path string, st consumer.Stats, logger *slog.Logger) {
	if path == "" {
		return
	}
	data, err := json.Marshal(st)
	if err == nil {
		tmp := path + ".tmp"
		if err = os.WriteFile(tmp, data, 0o644); err == nil {
			err = os.Rename(tmp, path)
		}
	}
	if err != nil {
		logger.Warn("member: writing stats", "err", err)
	}
}

// joinMarker keeps the file path in existence while a JoinGroup request of
// the member is in flight: from the end of its write (the broker may hold it
// from then on) to the end of the read of its answer, or of the read's
// failure. kfake (the embedded broker) forgets a member that dies while its
// JoinGroup waits in the join barrier only when a rebalance completes, arms
// it no session timer, and restarts the rebalance deadline at every join: the
// live members' joins, retried each time kgo gives up on an answer, then
// keep the group from ever completing one. A member that owns partitions
// under the cooperative protocol still joins at every rebalance, so owning
// partitions alone does not make a kill safe there.
type joinMarker struct {
	path string
	mu   sync.Mutex
	n    int // JoinGroup requests in flight; under mu
}

func newJoinMarker(statsPath string) *joinMarker {
	if statsPath == "" {
		return &joinMarker{}
	}
	return &joinMarker{path: statsPath + ".joining"}
}

// OnBrokerWrite implements kgo.HookBrokerWrite.
func (j *joinMarker) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key != int16(kmsg.JoinGroup) || err != nil || j.path == "" {
		return // a failed write is never read: no answer to wait for
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.n++; j.n == 1 {
		_ = os.WriteFile(j.path, nil, 0o644)
	}
}

// OnBrokerRead implements kgo.HookBrokerRead: kgo calls it for every request
// it wrote, when the answer is read or the read fails.
func (j *joinMarker) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, _ error) {
	if key != int16(kmsg.JoinGroup) || j.path == "" {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.n > 0 {
		if j.n--; j.n == 0 {
			_ = os.Remove(j.path)
		}
	}
}
