// Command loadgen produces orders at a steady rate, for examples/orders-etl
// and the docker-compose stack: something for the dashboard to show.
//
//	go run ./examples/loadgen -brokers 127.0.0.1:9092 -rate 500
//	go run ./examples/loadgen                       # starts an embedded kfake broker and prints its address
//
// It creates the topic (-partitions) if it does not exist, then writes
// orders {"order":"order-<run>-<n>","amount_cents":...} keyed and
// idempotency-keyed by their id, -rate per second, until interrupted (or
// for -duration, or -count orders). Every -invalid-every-th order has a
// negative amount, which orders-etl sends to the dead-letter topic.
// Every -report it prints how many orders it produced.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/kbatchtest"
)

type config struct {
	brokers, topic   string
	partitions       int
	rate             float64
	invalidEvery     int
	count            int
	duration, report time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.brokers, "brokers", "", "comma-separated seed brokers; empty starts an embedded kfake broker and prints its address")
	flag.StringVar(&c.topic, "topic", "orders", "topic to produce to")
	flag.IntVar(&c.partitions, "partitions", 12, "partitions of the topic if loadgen creates it")
	flag.Float64Var(&c.rate, "rate", 200, "orders per second")
	flag.IntVar(&c.invalidEvery, "invalid-every", 0, "make every n-th order invalid (negative amount); 0: none")
	flag.IntVar(&c.count, "count", 0, "stop after this many orders; 0: no limit")
	flag.DurationVar(&c.duration, "duration", 0, "stop after this long; 0: until interrupted")
	flag.DurationVar(&c.report, "report", 10*time.Second, "how often to print progress")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	if c.rate <= 0 {
		return errors.New("-rate must be positive")
	}
	if c.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.duration)
		defer cancel()
	}
	var (
		k   *kbatchtest.Cluster
		err error
	)
	if seeds := kbatchtest.SplitBrokers(c.brokers); len(seeds) > 0 {
		k, err = kbatchtest.Connect(seeds...)
	} else {
		k, err = kbatchtest.Embedded()
	}
	if err != nil {
		return err
	}
	defer k.Close()
	if k.Fake() != nil {
		fmt.Printf("loadgen: embedded kfake broker on %s\n", strings.Join(k.Brokers(), ","))
	}

	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = k.CreateTopic(cctx, c.topic, c.partitions)
	cancel()
	if err != nil {
		return err
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.DefaultProduceTopic(c.topic))
	if err != nil {
		return err
	}
	defer cl.Close()

	run := strconv.FormatInt(time.Now().Unix(), 36) // ids stay unique across restarts
	var acked, failed atomic.Int64
	var lastErr atomic.Value
	sent, invalid := 0, 0
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	report := time.NewTicker(c.report)
	defer report.Stop()
	fmt.Printf("loadgen: producing %.0f orders/s to %s\n", c.rate, c.topic)
	for c.count == 0 || sent < c.count {
		select {
		case <-ctx.Done():
			return finish(cl, sent, invalid, &acked, &failed)
		case <-report.C:
			fmt.Printf("loadgen: %d orders produced (%d invalid), %d acknowledged, %d failed%s\n",
				sent, invalid, acked.Load(), failed.Load(), lastError(&lastErr))
			continue
		case <-tick.C:
		}
		due := int(c.rate * time.Since(start).Seconds())
		if c.count > 0 {
			due = min(due, c.count)
		}
		for ; sent < due; sent++ {
			bad := c.invalidEvery > 0 && (sent+1)%c.invalidEvery == 0
			if bad {
				invalid++
			}
			// Not ctx: an order already made is delivered even after an interrupt.
			cl.Produce(context.Background(), newOrder(run, sent, bad), func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
					lastErr.Store(err.Error())
					return
				}
				acked.Add(1)
			})
		}
	}
	return finish(cl, sent, invalid, &acked, &failed)
}

// newOrder makes order n of this run: JSON value, its id as key and as
// idempotency key (the header orders-etl's dedupe store reads).
func newOrder(run string, n int, invalid bool) *kgo.Record {
	id := fmt.Sprintf("order-%s-%d", run, n)
	amount := int64(500 + n%10_000)
	if invalid {
		amount = -amount
	}
	value, _ := json.Marshal(struct {
		Order       string `json:"order"`
		AmountCents int64  `json:"amount_cents"`
	}{id, amount}) // cannot fail: two plain fields
	return &kgo.Record{
		Key:     []byte(id),
		Value:   value,
		Headers: []kgo.RecordHeader{{Key: dedupe.DefaultHeader, Value: []byte(id)}},
	}
}

// finish waits for the records in flight and prints the totals.
func finish(cl *kgo.Client, sent, invalid int, acked, failed *atomic.Int64) error {
	fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ferr := cl.Flush(fctx)
	fmt.Printf("loadgen: done: %d orders produced (%d invalid), %d acknowledged, %d failed\n", sent, invalid, acked.Load(), failed.Load())
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d orders were not acknowledged", n)
	}
	return ferr
}

func lastError(v *atomic.Value) string {
	if s, ok := v.Load().(string); ok {
		return " (last error: " + s + ")"
	}
	return ""
}
