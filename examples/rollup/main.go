// Command rollup counts and sums each key's values per event-time minute
// and writes each window to PostgreSQL once, with one upsert, when it
// closes: the partition's watermark (its greatest event time) passed the
// window's end plus the allowed lateness. A record for a window still open
// updates it; a record for a window already closed is counted and written
// to a side table instead (<prefix>late). Event time is the record
// timestamp. The state is checkpointed in the same transactions, with the
// partition's offset and fencing token, so after a crash the totals come out
// the same (see rollup.go and docs/postgres.md).
//
// With no -brokers it runs a demo on an embedded broker and the local
// PostgreSQL: it produces -records events over -minutes of event time, some
// of them late, rolls them up and checks the totals against a
// recomputation from the topic:
//
//	go run . -dsn postgres://postgres@127.0.0.1:5432/postgres
//
// As a service on a real cluster and database:
//
//	go run . -serve -brokers 127.0.0.1:9092 -topic readings -group rollup \
//	    -dsn postgres://user@db:5432/app -lateness 10s -metrics 127.0.0.1:9104
//
// -metrics serves /metrics (kbatch_*, kbatch_client_*, rollup_*) and the
// consumer's /healthz and /readyz.
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
	brokers, topic, group, dsn, prefix, metrics string
	records, partitions, keys, minutes, batch   int
	serve                                       bool
	lateness, checkpoint, sessionTimeout        time.Duration
	dieInSave                                   int
}

func main() {
	var f flags
	flag.StringVar(&f.brokers, "brokers", "", "comma-separated seed brokers; empty starts an embedded kfake broker (demo only)")
	flag.StringVar(&f.topic, "topic", "", "topic of events: key, decimal value, timestamp = event time (demo default: rollup-<time>)")
	flag.StringVar(&f.group, "group", "", "consumer group (demo default: rollup-<time>)")
	flag.StringVar(&f.dsn, "dsn", envOr("KBATCH_PG_DSN", "postgres://postgres@127.0.0.1:5432/postgres"), "PostgreSQL connection string (default $KBATCH_PG_DSN)")
	flag.StringVar(&f.prefix, "prefix", "rollup_", "prefix of the tables: <prefix>minute, <prefix>late, <prefix>open, <prefix>offsets")
	flag.StringVar(&f.metrics, "metrics", "", "serve /metrics, /healthz and /readyz on this address")
	flag.DurationVar(&f.lateness, "lateness", 10*time.Second, "allowed lateness: how far behind the watermark a window stays open")
	flag.DurationVar(&f.checkpoint, "checkpoint", 10*time.Second, "checkpoint a busy partition at least this often, even with no window closing")
	flag.IntVar(&f.batch, "batch", 1000, "records per batch")
	flag.IntVar(&f.records, "records", 60000, "demo: events to produce")
	flag.IntVar(&f.partitions, "partitions", 4, "demo: partitions of the topic")
	flag.IntVar(&f.keys, "keys", 20, "demo: distinct keys")
	flag.IntVar(&f.minutes, "minutes", 10, "demo: minutes of event time the events span")
	flag.BoolVar(&f.serve, "serve", false, "run the service until interrupted instead of the demo")
	flag.DurationVar(&f.sessionTimeout, "session-timeout", 10*time.Second, "group session timeout")
	flag.IntVar(&f.dieInSave, "die-in-save", 0, "crash testing: SIGKILL this process inside its n-th save transaction, before it commits")
	flag.Parse()

	var err error
	if f.serve {
		err = serve(context.Background(), f, nil)
	} else {
		err = demo(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rollup:", err)
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func openPool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("-dsn: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	return pool, nil
}

// serve runs one group member until ctx ends or SIGINT/SIGTERM.
func serve(ctx context.Context, f flags, ready chan<- *consumer.Consumer) error {
	if f.brokers == "" || f.topic == "" || f.group == "" {
		return errors.New("-serve needs -brokers, -topic and -group")
	}
	if f.lateness < 0 {
		return fmt.Errorf("-lateness %s: must be >= 0", f.lateness)
	}
	pool, err := openPool(ctx, f.dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	r := newRollup(pool, f.group, f.prefix, f.lateness, f.checkpoint)
	if err := r.setup(ctx); err != nil {
		return err
	}
	if f.dieInSave > 0 {
		var saves atomic.Int64
		r.beforeCommit = func() {
			if saves.Add(1) == int64(f.dieInSave) {
				fmt.Fprintln(os.Stderr, "rollup: crash testing: SIGKILL inside a save transaction")
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Second)
			}
		}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	kp := kprom.NewMetrics("kbatch_client")
	c, err := consumer.New(consumer.Config{
		Brokers:      kbatchtest.SplitBrokers(f.brokers),
		Group:        f.group,
		Topics:       []string{f.topic},
		Batch:        batcher.Policy{MaxRecords: f.batch},
		StartOffsets: r.startOffsets,
		DrainTimeout: 5 * time.Second,
		Logger:       logger,
		ClientOpts:   []kgo.Opt{kgo.WithHooks(kp), kgo.SessionTimeout(f.sessionTimeout), kgo.HeartbeatInterval(f.sessionTimeout / 10)},
	}, r.handle)
	if err != nil {
		return err
	}
	if f.metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(kp, metrics.NewCollector(c, prometheus.Labels{"service": "rollup"}))
		reg.MustRegister(r.collectors()...)
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

// demoEvents returns the demo's event i of n over minutes of event time
// from base: keys k<i mod keys>, value i mod 100; every 41st event is late
// by half the lateness (its window still open), every 97th by three
// minutes (its window closed: the late table).
func demoEvents(base time.Time, n, keys, minutes int, lateness time.Duration) func(i int) *kgo.Record {
	step := time.Duration(minutes) * time.Minute / time.Duration(n)
	return func(i int) *kgo.Record {
		at := base.Add(time.Duration(i) * step)
		switch {
		case i%97 == 96:
			at = at.Add(-3 * time.Minute)
		case i%41 == 40:
			at = at.Add(-lateness / 2)
		}
		return event(fmt.Sprintf("k%d", i%keys), int64(i%100), at)
	}
}

// demo rolls up -records events and checks the totals.
func demo(f flags) error {
	stamp := strings.ReplaceAll(time.Now().Format("150405.000"), ".", "")
	if f.topic == "" {
		f.topic = "rollup-" + stamp
	}
	if f.group == "" {
		f.group = "rollup-" + stamp
	}
	f.prefix = "rollup_demo_" + stamp + "_"
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
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	if err := k.Produce(ctx, f.topic, f.records, demoEvents(base, f.records, f.keys, f.minutes, f.lateness)); err != nil {
		return err
	}
	// A last event per partition an hour later closes every window.
	if err := k.ProduceEven(ctx, f.topic, f.partitions, func(int) *kgo.Record {
		return event(tickKey, 0, base.Add(time.Hour))
	}); err != nil {
		return err
	}
	fmt.Printf("produced %d events over %d minutes of event time to %s, then a closing tick per partition\n", f.records, f.minutes, f.topic)
	pool, err := openPool(ctx, f.dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	r := newRollup(pool, f.group, f.prefix, f.lateness, f.checkpoint)
	defer pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+r.t.minute+", "+r.t.late+", "+r.t.open+", "+r.t.offsets) //nolint:errcheck

	want, err := recompute(ctx, k, f.topic, f.lateness)
	if err != nil {
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
	var got result
	for {
		got, err = readResult(ctx, pool, r.t)
		if err == nil && got.windows() == want.windows() && len(got.late) == len(want.late) {
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
	fmt.Printf("rolled up in %s: %d key-minute windows written, %d late records in %s\n",
		elapsed.Round(time.Millisecond), got.windows(), len(got.late), strings.Trim(r.t.late, `"`))
	if diff := want.diff(got); diff != "" {
		return fmt.Errorf("check failed: the tables differ from a recomputation from the topic: %s", diff)
	}
	fmt.Println("  every window total equals a recomputation from the topic")
	return nil
}
