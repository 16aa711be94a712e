// Command orders-etl is an ETL service with two side effects per record: it
// charges each order, then emails a receipt. It shows how progress markers
// let a replay after a crash resume where the work stopped instead of
// repeating it: a charged order is marked "charged" in the dedupe store
// before the email is sent, so the replay sends the email without charging
// twice.
//
// With no flags it demonstrates a crash end to end on an embedded broker: it
// produces orders, runs the service as a child process that dies between the
// two steps of one order, runs it again, and checks that every order was
// charged exactly once and emailed.
//
//	go run ./examples/orders-etl
//	go run ./examples/orders-etl -brokers 127.0.0.1:9092
//
// The demo's topic has one partition, so that when the process dies nothing
// else is in flight and the check is exact. With several partitions, an order
// of another partition caught between its charge and its Mark when the process
// dies is charged again on replay: markers shrink that window to one record
// per partition; passing b.Key(i) to a payment API that takes idempotency keys
// closes it.
//
// The demo also slips one invalid order (a negative amount) into the
// stream: the handler refuses it with consumer.Permanent, so it goes to the
// dead-letter topic (<topic>.dlq) without being charged, and the demo checks
// it arrived there.
//
// As a service (what the demo's children and the docker-compose stack run):
//
//	go run ./examples/orders-etl -serve -brokers 127.0.0.1:9092 -topic orders -group orders-etl -dir /tmp/orders -metrics 127.0.0.1:9100
//
// -metrics serves Prometheus metrics on /metrics: kbatch's (kbatch_*) and
// franz-go's client metrics (kbatch_client_*); and on the same address the
// consumer's health: /readyz (joined and loaded) and /healthz (no partition
// stalled). examples/loadgen produces
// orders at a steady rate for it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/dedupe/kafkastore"
	"github.com/kbatch/kbatch/kbatchtest"
)

type flags struct {
	brokers, topic, group, dir, metrics string
	orders, partitions                  int
	serve                               bool
	crashAt                             string
}

func main() {
	var f flags
	flag.StringVar(&f.brokers, "brokers", "", "comma-separated seed brokers; empty starts an embedded kfake broker (demo only)")
	flag.StringVar(&f.topic, "topic", "", "orders topic (default: orders-<time>)")
	flag.StringVar(&f.group, "group", "", "consumer group (default: orders-etl-<time>)")
	flag.StringVar(&f.dir, "dir", "", "where the simulated payment and mail services write (default: a temporary directory)")
	flag.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9100")
	flag.IntVar(&f.orders, "orders", 2000, "orders to produce (demo)")
	flag.IntVar(&f.partitions, "partitions", 1, "partitions of the demo's topic (see the package comment)")
	flag.BoolVar(&f.serve, "serve", false, "run the service until interrupted instead of the demo")
	flag.StringVar(&f.crashAt, "crash-at", "", "demo: exit right after charging this order, before emailing it")
	flag.Parse()

	var err error
	if f.serve {
		err = serve(f)
	} else {
		err = demo(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "orders-etl:", err)
		os.Exit(1)
	}
}

// serve runs the service: one group member with a Kafka-backed dedupe store.
func serve(f flags) error {
	brokers := strings.Split(f.brokers, ",")
	if f.brokers == "" || f.topic == "" || f.group == "" || f.dir == "" {
		return errors.New("-serve needs -brokers, -topic, -group and -dir")
	}
	payments := &sideEffect{path: filepath.Join(f.dir, "payments.log")}
	mailer := &sideEffect{path: filepath.Join(f.dir, "emails.log")}

	store, err := kafkastore.New(kafkastore.Options{Brokers: brokers, Group: f.group})
	if err != nil {
		return err
	}
	defer store.Close()
	// The changelog is created (or checked) now, not in the first rebalance.
	pctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = store.Prepare(pctx, f.topic)
	cancel()
	if err != nil {
		return err
	}

	kp := kprom.NewMetrics("kbatch_client")
	cfg := consumer.Config{
		Brokers:    brokers,
		Group:      f.group,
		Topics:     []string{f.topic},
		Dedupe:     &consumer.Dedupe{Store: store},
		DeadLetter: &consumer.DeadLetter{},
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		ClientOpts: []kgo.Opt{kgo.WithHooks(kp), kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(500 * time.Millisecond)},
	}
	c, err := consumer.New(cfg, func(ctx context.Context, b *consumer.Batch) error {
		for i, r := range b.Records {
			order := b.Key(i)
			// An order no retry can fix goes to the dead-letter topic,
			// uncharged; the records before it are complete.
			if err := validate(r.Value); err != nil {
				return consumer.FailedAt(i, consumer.Permanent(fmt.Errorf("order %s: %w", order, err)))
			}
			// Step 1: charge, once. The marker is durable before Mark
			// returns: a replay sees it and skips the charge.
			if !b.HasMarker(i, "charged") {
				if err := payments.do(order); err != nil {
					return consumer.FailedAt(i, err)
				}
				if err := b.Mark(ctx, i, "charged"); err != nil {
					return consumer.FailedAt(i, err)
				}
			}
			if order == f.crashAt {
				os.Exit(7) // the process dies between the two steps
			}
			// Step 2: the receipt.
			if err := mailer.do(order + " " + string(r.Value)); err != nil {
				return consumer.FailedAt(i, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if f.metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(kp, newCollector(c))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		health := c.HealthHandler() // /healthz (live), /readyz (ready)
		mux.Handle("/healthz", health)
		mux.Handle("/livez", health)
		mux.Handle("/readyz", health)
		srv := &http.Server{Addr: f.metrics, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.ListenAndServe() }()
		defer srv.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return c.Run(ctx)
}

// order is what the orders topic carries (examples/loadgen writes the same).
type order struct {
	Order       string `json:"order"`
	AmountCents int64  `json:"amount_cents"`
}

// validate refuses an order that is not JSON, has no id or no positive
// amount.
func validate(value []byte) error {
	var o order
	if err := json.Unmarshal(value, &o); err != nil {
		return fmt.Errorf("not an order: %w", err)
	}
	if o.Order == "" {
		return errors.New("no order id")
	}
	if o.AmountCents <= 0 {
		return fmt.Errorf("amount %d cents is not positive", o.AmountCents)
	}
	return nil
}

// sideEffect stands for an external service: each call appends a line.
type sideEffect struct{ path string }

func (s *sideEffect) do(line string) error {
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// demo produces orders, runs the service twice (the first run dies between
// charging and emailing one order), and checks the side effects.
func demo(f flags) error {
	stamp := time.Now().Format("150405.000")
	stamp = strings.ReplaceAll(stamp, ".", "")
	if f.topic == "" {
		f.topic = "orders-" + stamp
	}
	if f.group == "" {
		f.group = "orders-etl-" + stamp
	}
	if f.dir == "" {
		dir, err := os.MkdirTemp("", "orders-etl-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		f.dir = dir
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if err := k.CreateTopic(ctx, f.topic, f.partitions); err != nil {
		return err
	}
	// The invalid order comes after the crash, so only the second run meets
	// it, once.
	invalidAfter := min(f.orders/2+10, f.orders-1)
	if err := produceOrders(ctx, k, f.topic, f.orders, invalidAfter); err != nil {
		return err
	}
	crashAt := fmt.Sprintf("order-%d", f.orders/2)
	fmt.Printf("produced %d orders and 1 invalid one to %s; the first run dies after charging %s, before its email\n", f.orders, f.topic, crashAt)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	run := func(extra ...string) (int, error) {
		args := append([]string{"-serve", "-brokers", f.brokers, "-topic", f.topic, "-group", f.group, "-dir", f.dir}, extra...)
		cmd := exec.Command(self, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		// Stop the service once every order was emailed.
		for {
			select {
			case err := <-waited:
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return ee.ExitCode(), nil
				}
				return 0, err
			case <-time.After(100 * time.Millisecond):
				if n, _ := countLines(filepath.Join(f.dir, "emails.log")); n >= f.orders {
					_ = cmd.Process.Signal(syscall.SIGTERM)
				}
			}
		}
	}
	code, err := run("-crash-at", crashAt)
	if err != nil {
		return err
	}
	fmt.Printf("run 1 exited with code %d (crashed between the two steps)\n", code)
	if code != 7 {
		return fmt.Errorf("run 1 exited with %d, want the simulated crash (7)", code)
	}
	if code, err = run(); err != nil || code != 0 {
		return fmt.Errorf("run 2: code %d, %v", code, err)
	}
	fmt.Println("run 2 finished the stream and stopped gracefully")

	charges, err := tally(filepath.Join(f.dir, "payments.log"))
	if err != nil {
		return err
	}
	emails, err := tally(filepath.Join(f.dir, "emails.log"))
	if err != nil {
		return err
	}
	doubleCharged, missing, emailed := 0, 0, 0
	for i := range f.orders {
		id := fmt.Sprintf("order-%d", i)
		if charges[id] > 1 {
			doubleCharged++
		}
		if charges[id] == 0 || emails[id] == 0 {
			missing++
		}
		emailed += emails[id]
	}
	fmt.Println()
	fmt.Println("summary")
	fmt.Printf("  orders                %d\n", f.orders)
	fmt.Printf("  charged               %d distinct, %d charged twice\n", len(charges), doubleCharged)
	fmt.Printf("  receipts sent         %d (at least once: a replay may resend a receipt)\n", emailed)
	fmt.Printf("  %s            charged %d time(s), emailed %d time(s)\n", crashAt, charges[crashAt], emails[crashAt])
	fmt.Printf("  missing               %d\n", missing)
	dlq, err := k.EndOffsets(ctx, f.topic+".dlq")
	if err != nil {
		return err
	}
	var deadLettered int64
	for _, n := range dlq {
		deadLettered += n
	}
	fmt.Printf("  %s         charged %d time(s); %d record(s) on %s.dlq\n", invalidOrder, charges[invalidOrder], deadLettered, f.topic)
	if doubleCharged != 0 || missing != 0 {
		return fmt.Errorf("check failed: %d double charges, %d orders missing a step", doubleCharged, missing)
	}
	if deadLettered != 1 || charges[invalidOrder] != 0 {
		return fmt.Errorf("check failed: the invalid order was charged %d time(s) and dead-lettered %d time(s), want 0 and 1", charges[invalidOrder], deadLettered)
	}
	return nil
}

// invalidOrder is the id of the demo's one order that the handler refuses.
const invalidOrder = "order-invalid"

// produceOrders writes n orders to topic, and after order invalidAfter one
// with a negative amount. Each carries its id as the idempotency key.
func produceOrders(ctx context.Context, k *kbatchtest.Cluster, topic string, n, invalidAfter int) error {
	return k.Produce(ctx, topic, n+1, func(i int) *kgo.Record {
		id, amount := fmt.Sprintf("order-%d", i), int64(1000+i)
		switch {
		case i == invalidAfter+1:
			id, amount = invalidOrder, -500
		case i > invalidAfter+1:
			id, amount = fmt.Sprintf("order-%d", i-1), int64(1000+i-1)
		}
		value, _ := json.Marshal(order{Order: id, AmountCents: amount}) // cannot fail: two plain fields
		return &kgo.Record{
			Key:     []byte(id),
			Value:   value,
			Headers: []kgo.RecordHeader{{Key: dedupe.DefaultHeader, Value: []byte(id)}},
		}
	})
}

// tally counts the lines of a side-effect log by order id (first word).
func tally(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, _, _ := strings.Cut(sc.Text(), " ")
		out[id]++
	}
	return out, sc.Err()
}

func countLines(path string) (int, error) {
	m, err := tally(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range m {
		n += c
	}
	return n, nil
}
