// Command pg-sink copies a Kafka topic into a PostgreSQL table with an
// exactly-once effect: every batch is one transaction that upserts its rows
// and stores the partition's next offset and the member's fencing token.
// When a partition is assigned, the service reads where it starts from that
// table (consumer.Config.StartOffsets) and claims it under its token; a
// transaction carrying an older token than the stored one (a member that
// lost the partition and does not know it yet) is refused. Kafka commits go
// on as usual, for lag tools; they are never where it starts from.
//
// With no -brokers it runs a demo on an embedded broker and the local
// PostgreSQL: it produces -records records, copies them, and checks that
// the table holds exactly one row per record, each written once:
//
//	go run . -dsn postgres://postgres@127.0.0.1:5432/postgres
//
// As a service on a real cluster and database:
//
//	go run . -serve -brokers 127.0.0.1:9092 -topic events -group pg-sink \
//	    -dsn postgres://user@db:5432/app -table events -metrics 127.0.0.1:9101
//
// -metrics serves Prometheus metrics on /metrics (kbatch_*, kbatch_client_*
// and pg_sink_*) and the consumer's health on /healthz and /readyz.
// docs/postgres.md has the argument for the exactly-once effect.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/kbatchtest"
	"github.com/kbatch/kbatch/metrics"
)

type flags struct {
	brokers, topic, group, dsn, table, offsetsTable, metrics string
	records, partitions, batch                               int
	serve                                                    bool
	protocol                                                 string
	sessionTimeout, idleInTx                                 time.Duration
	dieInBatch, stopBeforeBatch                              int
}

func main() {
	var f flags
	flag.StringVar(&f.brokers, "brokers", "", "comma-separated seed brokers; empty starts an embedded kfake broker (demo only)")
	flag.StringVar(&f.topic, "topic", "", "topic to copy (demo default: pg-sink-<time>)")
	flag.StringVar(&f.group, "group", "", "consumer group (demo default: pg-sink-<time>)")
	flag.StringVar(&f.dsn, "dsn", envOr("KBATCH_PG_DSN", "postgres://postgres@127.0.0.1:5432/postgres"), "PostgreSQL connection string (default $KBATCH_PG_DSN)")
	flag.StringVar(&f.table, "table", "pg_sink_rows", "table receiving the rows")
	flag.StringVar(&f.offsetsTable, "offsets-table", "kbatch_offsets", "table holding each partition's next offset and fencing token")
	flag.StringVar(&f.metrics, "metrics", "", "serve /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9101")
	flag.IntVar(&f.records, "records", 100000, "demo: records to produce")
	flag.IntVar(&f.partitions, "partitions", 4, "demo: partitions of the topic")
	flag.IntVar(&f.batch, "batch", 1000, "records per batch (one transaction each)")
	flag.BoolVar(&f.serve, "serve", false, "run the service until interrupted instead of the demo")
	flag.StringVar(&f.protocol, "protocol", "classic", "group protocol: classic or consumer (KIP-848)")
	flag.DurationVar(&f.sessionTimeout, "session-timeout", 10*time.Second, "group session timeout")
	flag.DurationVar(&f.idleInTx, "idle-in-transaction-timeout", 30*time.Second,
		"PostgreSQL ends a session idle inside a transaction for longer (frees a frozen member's locks); 0: never")
	flag.IntVar(&f.dieInBatch, "die-in-batch", 0, "crash testing: SIGKILL this process inside the n-th batch's transaction, before it commits")
	flag.IntVar(&f.stopBeforeBatch, "stop-before-batch", 0, "crash testing: SIGSTOP this process before the n-th batch's transaction begins")
	flag.Parse()

	var err error
	if f.serve {
		err = serve(context.Background(), f, nil)
	} else {
		err = demo(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pg-sink:", err)
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// openPool connects to PostgreSQL.
func openPool(ctx context.Context, f flags) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(f.dsn)
	if err != nil {
		return nil, fmt.Errorf("-dsn: %w", err)
	}
	if f.idleInTx > 0 {
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = fmt.Sprint(f.idleInTx.Milliseconds())
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	return pool, nil
}

// serve runs one group member until ctx ends or SIGINT/SIGTERM. ready, if
// not nil, is closed once the member runs.
func serve(ctx context.Context, f flags, ready chan<- *consumer.Consumer) error {
	if f.brokers == "" || f.topic == "" || f.group == "" {
		return errors.New("-serve needs -brokers, -topic and -group")
	}
	proto := consumer.ProtocolClassic
	switch f.protocol {
	case "classic":
	case "consumer":
		proto = consumer.ProtocolConsumer
	default:
		return fmt.Errorf("-protocol %q: want classic or consumer", f.protocol)
	}
	pool, err := openPool(ctx, f)
	if err != nil {
		return err
	}
	defer pool.Close()
	s := newSink(pool, f.group, f.table, f.offsetsTable)
	if err := s.setup(ctx); err != nil {
		return err
	}
	var batches atomic.Int64
	if f.dieInBatch > 0 {
		s.beforeCommit = func(*consumer.Batch) {
			if batches.Add(1) == int64(f.dieInBatch) {
				fmt.Fprintln(os.Stderr, "pg-sink: crash testing: SIGKILL inside a transaction")
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	if f.stopBeforeBatch > 0 {
		s.beforeBegin = func(ctx context.Context, b *consumer.Batch) context.Context {
			if batches.Add(1) != int64(f.stopBeforeBatch) {
				return ctx
			}
			fmt.Fprintf(os.Stderr, "pg-sink: crash testing: SIGSTOP before the transaction of %s/%d offsets %d-%d, token %d\n",
				b.Topic, b.Partition, b.FirstOffset(), b.LastOffset(), b.Token())
			_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
			// The stop reaches this thread at its next entry into the
			// kernel: sleep so that it stops here, not after sending BEGIN.
			time.Sleep(200 * time.Millisecond)
			// Woken up: go on as a handler that ignores its cancelled
			// context would. Only the token can stop this transaction.
			return context.WithoutCancel(ctx)
		}
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	handler := func(ctx context.Context, b *consumer.Batch) error {
		err := s.handle(ctx, b)
		if errors.Is(err, errFenced) {
			logger.Warn(err.Error())
		}
		return err
	}
	kp := kprom.NewMetrics("kbatch_client")
	c, err := consumer.New(consumer.Config{
		Brokers:      kbatchtest.SplitBrokers(f.brokers),
		Group:        f.group,
		Topics:       []string{f.topic},
		Protocol:     proto,
		Batch:        batcher.Policy{MaxRecords: f.batch},
		StartOffsets: s.startOffsets,
		DrainTimeout: 5 * time.Second,
		Logger:       logger,
		ClientOpts:   []kgo.Opt{kgo.WithHooks(kp), kgo.SessionTimeout(f.sessionTimeout), kgo.HeartbeatInterval(f.sessionTimeout / 10)},
	}, handler)
	if err != nil {
		return err
	}
	if f.metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(kp, metrics.NewCollector(c, prometheus.Labels{"service": "pg-sink"}))
		reg.MustRegister(s.collectors()...)
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		health := c.HealthHandler()
		mux.Handle("/healthz", health)
		mux.Handle("/readyz", health)
		srv := &http.Server{Addr: f.metrics, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.ListenAndServe() }()
		defer srv.Close()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if ready != nil {
		ready <- c
	}
	return c.Run(ctx)
}

// demo copies -records records from an embedded broker (or -brokers) into
// the local PostgreSQL with one member in this process, and checks the
// table.
func demo(f flags) error {
	stamp := strings.ReplaceAll(time.Now().Format("150405.000"), ".", "")
	if f.topic == "" {
		f.topic = "pg-sink-" + stamp
	}
	if f.group == "" {
		f.group = "pg-sink-" + stamp
	}
	var (
		k   *kbatchtest.Cluster
		err error
	)
	if f.brokers == "" {
		k, err = kbatchtest.Embedded()
		if err == nil {
			f.brokers = strings.Join(k.Brokers(), ",")
			fmt.Println("embedded kfake broker on", f.brokers)
		}
	} else {
		k, err = kbatchtest.Connect(kbatchtest.SplitBrokers(f.brokers)...)
	}
	if err != nil {
		return err
	}
	defer k.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := k.CreateTopic(ctx, f.topic, f.partitions); err != nil {
		return err
	}
	if err := k.ProduceEven(ctx, f.topic, f.records, eventRecord); err != nil {
		return err
	}
	fmt.Printf("produced %d records to %s (%d partitions)\n", f.records, f.topic, f.partitions)

	pool, err := openPool(ctx, f)
	if err != nil {
		return err
	}
	defer pool.Close()
	// Start from an empty table of the demo's own.
	if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+quote(f.table)); err != nil {
		return err
	}

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	ready := make(chan *consumer.Consumer, 1)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- serve(runCtx, f, ready) }()
	select {
	case <-ready:
	case err := <-done:
		return err
	}
	for {
		st, err := tableStats(ctx, pool, f.table)
		if err == nil && st.records >= int64(f.records) {
			break
		}
		select {
		case err := <-done:
			return fmt.Errorf("the service stopped early: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	stopRun()
	if err := <-done; err != nil {
		return err
	}
	st, err := tableStats(ctx, pool, f.table)
	if err != nil {
		return err
	}
	fmt.Printf("copied into %s in %s (%.0f rows/s)\n", f.table, elapsed.Round(time.Millisecond), float64(st.rows)/elapsed.Seconds())
	fmt.Printf("  rows %d, records written %d, written more than once %d, missing %d\n",
		st.rows, st.records, st.duplicated, int64(f.records)-st.rows)
	if st.rows != int64(f.records) || st.duplicated != 0 {
		return errors.New("check failed: want one row per record, each written once")
	}
	return nil
}

// eventRecord is the demo's record i: key event-<i>, a small JSON value.
func eventRecord(i int) *kgo.Record {
	return &kgo.Record{
		Key:   fmt.Appendf(nil, "event-%d", i),
		Value: fmt.Appendf(nil, `{"event":%d,"amount_cents":%d}`, i, 100+i%900),
	}
}

// stats summarizes the rows table.
type stats struct {
	rows, records, duplicated int64
}

func tableStats(ctx context.Context, pool *pgxpool.Pool, table string) (stats, error) {
	var st stats
	err := pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(applied), 0), count(*) FILTER (WHERE applied > 1) FROM `+quote(table)).
		Scan(&st.rows, &st.records, &st.duplicated)
	return st, err
}
