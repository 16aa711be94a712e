// Command resequencer shows the Resequence ordering on the case it is made
// for: every message takes about 750ms to process, a message arrives every
// 250ms, and the results must reach the destination in the order the
// messages arrived. Handled one after another (partition order) the queue
// grows by two messages every second without end; with Process running
// concurrently and the results emitted in offset order, it stays flat.
//
// The program produces the messages at the given pace, consumes them with
// consumer.Resequence, prints the queue (produced, not yet emitted) every
// second, and checks itself at the end: every message emitted once, in
// arrival order, and the queue never above what the processing time
// explains. It exits non-zero if not.
//
// With no flags it starts an embedded broker (franz-go's kfake) and takes
// about 20 seconds:
//
//	go run ./examples/resequencer
//
// Against a real cluster, or with partition order to watch the queue grow:
//
//	go run ./examples/resequencer -brokers 127.0.0.1:9092
//	go run ./examples/resequencer -ordering partition -messages 40
//
// (the latter reports the queue growing and exits 1).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/kbatchtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "resequencer:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		brokers     = flag.String("brokers", "", "comma-separated seed brokers; empty starts an embedded kfake broker")
		topic       = flag.String("topic", "", "topic (default: a new resequencer-<time> topic, one partition)")
		group       = flag.String("group", "", "consumer group (default: resequencer-<time>)")
		messages    = flag.Int("messages", 60, "messages to produce")
		every       = flag.Duration("every", 250*time.Millisecond, "time between two messages")
		work        = flag.Duration("work", 750*time.Millisecond, "processing time of one message")
		concurrency = flag.Int("concurrency", 8, "messages processed at the same time")
		ordering    = flag.String("ordering", "resequence", `"resequence" or "partition" (one message after another)`)
	)
	flag.Parse()
	if *messages < 1 || *every <= 0 || *work < 0 || *concurrency < 1 {
		return errors.New("-messages, -every and -concurrency must be positive, -work not negative")
	}
	if *ordering != "resequence" && *ordering != "partition" {
		return fmt.Errorf("-ordering %q: want resequence or partition", *ordering)
	}

	stamp := time.Now().Format("20060102-150405")
	if *topic == "" {
		*topic = "resequencer-" + stamp
	}
	if *group == "" {
		*group = "resequencer-" + stamp
	}
	var (
		k   *kbatchtest.Cluster
		err error
	)
	if seeds := kbatchtest.SplitBrokers(*brokers); len(seeds) > 0 {
		k, err = kbatchtest.Connect(seeds...)
	} else {
		k, err = kbatchtest.Embedded()
	}
	if err != nil {
		return err
	}
	defer k.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := k.CreateTopic(ctx, *topic, 1); err != nil {
		return err
	}

	// process is the slow step: an enrichment call, a model, a remote API.
	process := func(ctx context.Context, r *kgo.Record) (any, error) {
		select {
		case <-time.After(*work):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return "enriched " + string(r.Value), nil
	}
	out := &destination{}
	cfg := consumer.Config{
		Brokers: k.Brokers(), Group: *group, Topics: []string{*topic},
		Batch:  batcher.Policy{MaxWait: 10 * time.Millisecond},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	var handler consumer.Handler
	if *ordering == "resequence" {
		cfg.Ordering, cfg.Concurrency, cfg.Process = consumer.Resequence, *concurrency, process
		// The in-order step: the results of a batch, in offset order.
		handler = func(ctx context.Context, b *consumer.Batch) error {
			for i := range b.Records {
				v, err := b.Result(i)
				if err != nil {
					return consumer.FailedAt(i, err)
				}
				out.emit(b.Records[i], v.(string))
			}
			return nil
		}
	} else {
		handler = func(ctx context.Context, b *consumer.Batch) error {
			for _, r := range b.Records {
				v, err := process(ctx, r)
				if err != nil {
					return err
				}
				out.emit(r, v.(string))
			}
			return nil
		}
	}
	c, err := consumer.New(cfg, handler)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	fmt.Printf("%d messages, one every %s, %s of processing each, ordering %s", *messages, *every, *work, *ordering)
	if *ordering == "resequence" {
		fmt.Printf(", concurrency %d", *concurrency)
	}
	fmt.Println()
	var produced atomic.Int64
	prodErr := make(chan error, 1)
	go func() {
		tick := time.NewTicker(*every)
		defer tick.Stop()
		for i := range *messages {
			rec := &kgo.Record{Key: []byte("sensor-1"), Value: []byte("message " + strconv.Itoa(i))}
			if err := k.Produce(ctx, *topic, 1, func(int) *kgo.Record { return rec }); err != nil {
				prodErr <- err
				return
			}
			produced.Add(1)
			select {
			case <-tick.C:
			case <-ctx.Done():
				prodErr <- ctx.Err()
				return
			}
		}
		prodErr <- nil
	}()

	// The queue the processing time explains: the messages arriving while
	// one is processed, and a few in flight between the steps.
	bound := int64(*work / *every) + 3
	maxQueue := int64(0)
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	producing := true
	for {
		select {
		case err := <-prodErr:
			if err != nil {
				return fmt.Errorf("producing: %w", err)
			}
			producing, prodErr = false, nil // a nil channel: never ready again
		case err := <-done:
			return fmt.Errorf("consumer stopped: %v", err)
		case <-tick.C:
			emitted := out.count()
			queue := produced.Load() - emitted
			maxQueue = max(maxQueue, queue)
			fmt.Printf("  %3.0fs  produced %3d  emitted %3d  queue %2d %s\n", time.Since(start).Seconds(),
				produced.Load(), emitted, queue, strings.Repeat("#", int(min(queue, 60))))
		}
		if !producing && out.count() == produced.Load() {
			break
		}
		if time.Since(start) > time.Duration(*messages)*(*every+*work)+30*time.Second {
			return errors.New("timed out waiting for the results")
		}
	}
	if err := c.Close(); err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}

	seqs, latency := out.results()
	fmt.Printf("emitted %d results in %s; mean latency %s; largest queue %d\n",
		len(seqs), time.Since(start).Round(100*time.Millisecond), latency.Round(10*time.Millisecond), maxQueue)
	for i, s := range seqs {
		if s != i {
			return fmt.Errorf("result %d is message %d: not in arrival order", i, s)
		}
	}
	if len(seqs) != *messages {
		return fmt.Errorf("%d results for %d messages", len(seqs), *messages)
	}
	if maxQueue > bound {
		return fmt.Errorf("the queue reached %d messages, more than the %d the processing time explains: it grows", maxQueue, bound)
	}
	fmt.Println("ok: every result emitted once, in arrival order, and the queue stayed flat")
	return nil
}

// destination stands for the system the results go to, in order.
type destination struct {
	mu      sync.Mutex
	seqs    []int
	latency time.Duration // summed
	n       atomic.Int64
}

func (d *destination) emit(r *kgo.Record, result string) {
	seq, err := strconv.Atoi(strings.TrimPrefix(string(r.Value), "message "))
	if err != nil || result != "enriched "+string(r.Value) {
		seq = -1
	}
	d.mu.Lock()
	d.seqs = append(d.seqs, seq)
	d.latency += time.Since(r.Timestamp)
	d.mu.Unlock()
	d.n.Add(1)
}

func (d *destination) count() int64 { return d.n.Load() }

func (d *destination) results() ([]int, time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.seqs) == 0 {
		return nil, 0
	}
	return append([]int(nil), d.seqs...), d.latency / time.Duration(len(d.seqs))
}
