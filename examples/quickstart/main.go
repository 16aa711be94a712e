// Command quickstart shows kbatch end to end: it produces events, consumes
// them with a group of three members (one joins late, one leaves early, to
// show a rebalance), prints progress, and ends with a summary it checks
// itself: every record handled (lost = 0) and in offset order per partition.
//
// With no flags it starts an embedded broker (franz-go's kfake), so it needs
// nothing installed:
//
//	go run ./examples/quickstart
//
// Against a real cluster:
//
//	go run ./examples/quickstart -brokers 127.0.0.1:9092
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/internal/kafkatest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		brokers    = flag.String("brokers", "", "comma-separated seed brokers; empty starts an embedded kfake broker")
		topic      = flag.String("topic", "", "topic to produce to and consume (default: a new quickstart-<time> topic)")
		group      = flag.String("group", "", "consumer group (default: quickstart-<time>)")
		records    = flag.Int("records", 300_000, "events to produce")
		partitions = flag.Int("partitions", 8, "partitions of the topic when it is created")
		work       = flag.Duration("work", 10*time.Millisecond, "simulated sink round trip per batch")
		verbose    = flag.Bool("v", false, "log the consumers' rebalances")
	)
	flag.Parse()

	stamp := time.Now().Format("20060102-150405")
	if *topic == "" {
		*topic = "quickstart-" + stamp
	}
	if *group == "" {
		*group = "quickstart-" + stamp
	}
	seeds := splitBrokers(*brokers)
	if len(seeds) == 0 {
		cluster, err := kafkatest.NewEmbedded()
		if err != nil {
			return fmt.Errorf("starting the embedded broker: %w", err)
		}
		defer cluster.Close()
		seeds = cluster.ListenAddrs()
		fmt.Printf("embedded kfake broker on %s\n", strings.Join(seeds, ","))
	}

	if err := kafkatest.CreateTopic(context.Background(), seeds, *topic, *partitions); err != nil {
		return err
	}
	fmt.Printf("producing %d events to %s ...\n", *records, *topic)
	start := time.Now()
	if err := kafkatest.ProduceN(context.Background(), seeds, *topic, *records, 0, func(i int) []byte {
		return fmt.Appendf(nil, `{"event":%d,"kind":"page_view"}`, i)
	}); err != nil {
		return fmt.Errorf("producing: %w", err)
	}
	fmt.Printf("produced in %s\n", time.Since(start).Round(time.Millisecond))
	end, err := endOffsets(seeds, *topic)
	if err != nil {
		return err
	}
	var total int64
	for _, e := range end {
		total += e
	}

	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	cfg := consumer.Config{Brokers: seeds, Group: *group, Topics: []string{*topic}, Logger: logger}
	chk := newChecker()

	// The handler: here it only checks order and counts; a real service
	// would write the batch to a database or an API in one call.
	handler := func(ctx context.Context, b *consumer.Batch) error {
		chk.observe(b)
		if *work > 0 { // stand-in for the sink's round trip
			select {
			case <-time.After(*work):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}

	members := map[string]*runner{}
	startMember := func(name string) error {
		c, err := consumer.New(cfg, handler)
		if err != nil {
			return err
		}
		r := &runner{c: c, done: make(chan error, 1)}
		go func() { r.done <- c.Run(context.Background()) }()
		members[name] = r
		fmt.Printf("  + %s joins the group\n", name)
		return nil
	}

	fmt.Printf("consuming with group %s\n", *group)
	start = time.Now()
	for _, name := range []string{"member-1", "member-2"} {
		if err := startMember(name); err != nil {
			return err
		}
	}
	joined, left := false, false
	lastPrint := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(5 * time.Minute)
	for chk.distinct.Load() < total {
		select {
		case <-tick.C:
		case <-timeout:
			return fmt.Errorf("timed out with %d of %d events handled", chk.distinct.Load(), total)
		}
		got := chk.distinct.Load()
		if time.Since(lastPrint) >= 500*time.Millisecond {
			lastPrint = time.Now()
			fmt.Printf("  %7d / %d events (%3.0f%%)\n", got, total, 100*float64(got)/float64(total))
		}
		if !joined && got >= total/3 {
			joined = true
			if err := startMember("member-3"); err != nil {
				return err
			}
		}
		// member-1 leaves once member-3 took over some partitions.
		if !left && joined && got >= 2*total/3 && len(members["member-3"].c.Assigned()) > 0 {
			left = true
			fmt.Println("  - member-1 leaves the group")
			if err := members["member-1"].stop(); err != nil {
				return err
			}
		}
	}
	elapsed := time.Since(start)

	var s consumer.Stats
	for _, name := range []string{"member-1", "member-2", "member-3"} {
		r := members[name]
		if r == nil {
			continue
		}
		if err := r.stop(); err != nil {
			return err
		}
		st := r.c.Stats()
		s.Records += st.Records
		s.Batches += st.Batches
		s.Commits += st.Commits
		s.Rebalances += st.Rebalances
		s.PartitionsRevoked += st.PartitionsRevoked
	}

	lost, dups, disorder := chk.verify(end)
	fmt.Println()
	fmt.Println("summary")
	fmt.Printf("  records handled   %d\n", s.Records)
	fmt.Printf("  batches           %d (%.0f records per batch)\n", s.Batches, float64(s.Records)/max(float64(s.Batches), 1))
	fmt.Printf("  commits           %d (windowed: not one per record or per batch)\n", s.Commits)
	fmt.Printf("  rebalances        %d member sessions, %d partitions handed over\n", s.Rebalances, s.PartitionsRevoked)
	fmt.Printf("  throughput        %.0f records/s over %s\n", float64(s.Records)/elapsed.Seconds(), elapsed.Round(time.Millisecond))
	fmt.Printf("  duplicates        %d\n", dups)
	fmt.Printf("  lost              %d\n", lost)
	fmt.Printf("  out-of-order      %d\n", disorder)
	if lost != 0 || disorder != 0 {
		return fmt.Errorf("check failed: lost %d, out-of-order %d", lost, disorder)
	}
	return nil
}

type runner struct {
	c    *consumer.Consumer
	done chan error
	once sync.Once
	err  error
}

func (r *runner) stop() error {
	r.once.Do(func() {
		_ = r.c.Close()
		r.err = <-r.done
	})
	return r.err
}

// checker checks what the handlers saw: per partition, in handling order.
type checker struct {
	mu       sync.Mutex
	last     map[int32]int64
	seen     map[int32]map[int64]int
	disorder int
	distinct atomic.Int64
}

func newChecker() *checker {
	return &checker{last: map[int32]int64{}, seen: map[int32]map[int64]int{}}
}

func (c *checker) observe(b *consumer.Batch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := c.seen[b.Partition]
	if seen == nil {
		seen = map[int64]int{}
		c.seen[b.Partition] = seen
	}
	last, ok := c.last[b.Partition]
	for _, r := range b.Records {
		if ok && r.Offset <= last {
			c.disorder++
		}
		last, ok = r.Offset, true
		if seen[r.Offset] == 0 {
			c.distinct.Add(1)
		}
		seen[r.Offset]++
	}
	c.last[b.Partition] = last
}

func (c *checker) verify(end map[int32]int64) (lost, dups, disorder int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, e := range end {
		for o := int64(0); o < e; o++ {
			switch n := c.seen[p][o]; {
			case n == 0:
				lost++
			case n > 1:
				dups += n - 1
			}
		}
	}
	return lost, dups, c.disorder
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

func endOffsets(brokers []string, topic string) (map[int32]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing end offsets: %w", err)
	}
	out := map[int32]int64{}
	resp.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}
