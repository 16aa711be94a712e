// Command outbox-relay is the transactional outbox, end to end on
// PostgreSQL and Kafka:
//
//   - a service places an order: the order row and an outbox row commit in
//     one transaction (placeOrder), and NOTIFY wakes the relay;
//   - the relay (-mode relay) reads unsent outbox rows in id order,
//     produces them with franz-go's idempotent producer, waits for every
//     acknowledgement, then marks them sent; each record carries its outbox
//     row id as its Idempotency-Key; it serves the backlog as a gauge;
//   - a kbatch consumer (-mode consumer) ships each order once, with a
//     dedupe store that skips keys already done: a relay that dies between
//     produce and mark produces the run again, and nothing is shipped twice.
//
// With no -mode it runs all three in this process on an embedded broker and
// the local PostgreSQL, and checks that every order was shipped once:
//
//	go run . -dsn postgres://postgres@127.0.0.1:5432/postgres
//
// As services on a real cluster and database:
//
//	go run . -mode relay    -brokers 127.0.0.1:9092 -dsn postgres://... -metrics 127.0.0.1:9102
//	go run . -mode consumer -brokers 127.0.0.1:9092 -dsn postgres://... -group shipper -metrics 127.0.0.1:9103
//	go run . -mode place    -brokers 127.0.0.1:9092 -dsn postgres://... -orders 1000
//
// -metrics serves /metrics (outbox_relay_backlog_rows and the like; the
// consumer's kbatch_* too) and, for the consumer, /healthz and /readyz.
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/dedupe/kafkastore"
	"github.com/kbatch/kbatch/kbatchtest"
	"github.com/kbatch/kbatch/metrics"
)

type flags struct {
	mode, brokers, topic, group, dsn, prefix, metrics string
	orders, batch, partitions                         int
	poll                                              time.Duration
	dieAfterProduce                                   int
}

func main() {
	var f flags
	flag.StringVar(&f.mode, "mode", "demo", "demo, relay, consumer or place")
	flag.StringVar(&f.brokers, "brokers", "", "comma-separated seed brokers; empty starts an embedded kfake broker (demo only)")
	flag.StringVar(&f.topic, "topic", "orders-placed", "topic the outbox rows go to")
	flag.StringVar(&f.group, "group", "outbox-shipper", "consumer group of the downstream consumer")
	flag.StringVar(&f.dsn, "dsn", envOr("KBATCH_PG_DSN", "postgres://postgres@127.0.0.1:5432/postgres"), "PostgreSQL connection string (default $KBATCH_PG_DSN)")
	flag.StringVar(&f.prefix, "prefix", "shop_", "prefix of the tables: <prefix>orders, <prefix>outbox, <prefix>shipments")
	flag.StringVar(&f.metrics, "metrics", "", "serve /metrics (and the consumer's /healthz, /readyz) on this address")
	flag.IntVar(&f.orders, "orders", 5000, "demo and place: orders to place")
	flag.IntVar(&f.batch, "batch", 500, "relay: outbox rows per produce-then-mark run")
	flag.IntVar(&f.partitions, "partitions", 3, "demo: partitions of the topic")
	flag.DurationVar(&f.poll, "poll", time.Second, "relay: longest wait for a NOTIFY before looking at the outbox anyway")
	flag.IntVar(&f.dieAfterProduce, "die-after-produce", 0, "crash testing: the relay SIGKILLs itself after producing its n-th run, before marking it sent")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch f.mode {
	case "demo":
		err = demo(ctx, f)
	case "relay":
		err = runRelay(ctx, f, nil)
	case "consumer":
		err = runConsumer(ctx, f, nil)
	case "place":
		err = runPlace(ctx, f)
	default:
		err = fmt.Errorf("-mode %q: want demo, relay, consumer or place", f.mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "outbox-relay:", err)
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func openPool(ctx context.Context, f flags) (*pgxpool.Pool, tables, error) {
	pool, err := pgxpool.New(ctx, f.dsn)
	if err != nil {
		return nil, tables{}, fmt.Errorf("-dsn: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, tables{}, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	t := newTables(f.prefix)
	if err := t.setup(ctx, pool); err != nil {
		pool.Close()
		return nil, tables{}, err
	}
	return pool, t, nil
}

// serveMetrics serves reg (and health, if not nil) on addr until the
// returned function is called.
func serveMetrics(addr string, reg *prometheus.Registry, health http.Handler) func() {
	if addr == "" {
		return func() {}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if health != nil {
		mux.Handle("/healthz", health)
		mux.Handle("/readyz", health)
	}
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ListenAndServe() }()
	return func() { _ = srv.Close() }
}

// runRelay runs the relay until ctx ends. ready, if not nil, gets the
// relay once it runs.
func runRelay(ctx context.Context, f flags, ready chan<- *relay) error {
	if f.brokers == "" {
		return errors.New("-mode relay needs -brokers")
	}
	pool, t, err := openPool(ctx, f)
	if err != nil {
		return err
	}
	defer pool.Close()
	// franz-go's producer is idempotent by default (acks=all, sequence
	// numbers): a retried produce request writes nothing twice, and the
	// records of a run keep their order within a partition.
	cl, err := kgo.NewClient(kgo.SeedBrokers(kbatchtest.SplitBrokers(f.brokers)...),
		kgo.AllowAutoTopicCreation(), kgo.ProducerLinger(0))
	if err != nil {
		return err
	}
	defer cl.Close()
	r := newRelay(pool, cl, t, f.batch, f.poll)
	if f.dieAfterProduce > 0 {
		var runs atomic.Int64
		r.afterProduce = func(n int) {
			if runs.Add(1) == int64(f.dieAfterProduce) {
				fmt.Fprintf(os.Stderr, "outbox-relay: crash testing: SIGKILL after producing %d rows, before marking them sent\n", n)
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Second)
			}
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.collectors()...)
	defer serveMetrics(f.metrics, reg, nil)()
	if ready != nil {
		ready <- r
	}
	return r.run(ctx)
}

// runConsumer runs the downstream consumer until ctx ends.
func runConsumer(ctx context.Context, f flags, ready chan<- *consumer.Consumer) error {
	if f.brokers == "" {
		return errors.New("-mode consumer needs -brokers")
	}
	brokers := kbatchtest.SplitBrokers(f.brokers)
	pool, t, err := openPool(ctx, f)
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := kafkastore.New(kafkastore.Options{Brokers: brokers, Group: f.group})
	if err != nil {
		return err
	}
	defer store.Close()
	s := newShipper(pool, t)
	kp := kprom.NewMetrics("kbatch_client")
	c, err := consumer.New(consumer.Config{
		Brokers:    brokers,
		Group:      f.group,
		Topics:     []string{f.topic},
		Dedupe:     &consumer.Dedupe{Store: store},
		DeadLetter: &consumer.DeadLetter{},
		Logger:     logger(),
		ClientOpts: []kgo.Opt{kgo.WithHooks(kp)},
	}, s.handle)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(kp, metrics.NewCollector(c, prometheus.Labels{"service": "outbox-consumer"}), s.shipped)
	defer serveMetrics(f.metrics, reg, c.HealthHandler())()
	if ready != nil {
		ready <- c
	}
	return c.Run(ctx)
}

// runPlace places f.orders orders from 4 writers.
func runPlace(ctx context.Context, f flags) error {
	pool, t, err := openPool(ctx, f)
	if err != nil {
		return err
	}
	defer pool.Close()
	return placeOrders(ctx, pool, t, f.topic, 0, f.orders)
}

// placeOrders places orders from..to-1 (customer c<i mod 50>, amount
// 100+i cents) from 4 concurrent writers.
func placeOrders(ctx context.Context, pool *pgxpool.Pool, t tables, topic string, from, to int) error {
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		errs = make(chan error, 4)
	)
	next.Store(int64(from))
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(to) {
					return
				}
				if _, err := placeOrder(ctx, pool, t, topic, fmt.Sprintf("c%d", i%50), 100+i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// demo runs the relay and the consumer in this process, places orders and
// checks every one was shipped once.
func demo(ctx context.Context, f flags) error {
	stamp := strings.ReplaceAll(time.Now().Format("150405.000"), ".", "")
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
	f.topic += "-" + stamp
	f.group += "-" + stamp
	f.prefix = "outbox_demo_" + stamp + "_"
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := k.CreateTopic(ctx, f.topic, f.partitions); err != nil {
		return err
	}
	pool, t, err := openPool(ctx, f)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+t.orders+", "+t.outbox+", "+t.shipments) //nolint:errcheck

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	relays, consumers := make(chan *relay, 1), make(chan *consumer.Consumer, 1)
	done := make(chan error, 2)
	go func() { done <- runRelay(runCtx, f, relays) }()
	go func() { done <- runConsumer(runCtx, f, consumers) }()
	start := time.Now()
	if err := placeOrders(ctx, pool, t, f.topic, 0, f.orders); err != nil {
		return err
	}
	fmt.Printf("placed %d orders (order row + outbox row, one transaction each) in %s\n", f.orders, time.Since(start).Round(time.Millisecond))
	for {
		st, err := countShipments(ctx, pool, t)
		if err != nil {
			return err
		}
		if st.distinct >= int64(f.orders) {
			break
		}
		select {
		case err := <-done:
			return fmt.Errorf("a service stopped early: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Printf("every order shipped %s after the first was placed\n", time.Since(start).Round(time.Millisecond))
	stopRun()
	for range 2 {
		if err := <-done; err != nil {
			return err
		}
	}
	st, err := countShipments(ctx, pool, t)
	if err != nil {
		return err
	}
	var unsent int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+t.outbox+` WHERE sent_at IS NULL`).Scan(&unsent); err != nil {
		return err
	}
	fmt.Printf("  orders %d, outbox rows unsent %d, shipments %d (%d orders), shipped more than once %d\n",
		f.orders, unsent, st.rows, st.distinct, st.repeated)
	if unsent != 0 || st.rows != int64(f.orders) || st.repeated != 0 {
		return errors.New("check failed: want every order shipped exactly once")
	}
	return nil
}
