// Command quickstart shows kbatch end to end: it produces events and
// consumes them with a consumer group whose membership changes on the way,
// prints progress, and ends with a summary it checks itself: every record
// handled once (lost = 0, duplicates = 0) and in offset order per partition.
//
// The run has three phases, so the rebalances happen in every run, however
// fast the machine: members 1 and 2 consume the first third of the events;
// member 3 joins, and the second third is produced only once it owns
// partitions; member 1 leaves (drains, commits, hands its partitions over),
// and the last third is produced only once members 2 and 3 own everything.
// Each membership change starts while the previous phase's events are still
// being handled.
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

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/kbatchtest"
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
		records    = flag.Int("records", 300_000, "events to produce, in three phases")
		partitions = flag.Int("partitions", 8, "partitions of the topic when it is created")
		work       = flag.Duration("work", 10*time.Millisecond, "simulated sink round trip per batch")
		verbose    = flag.Bool("v", false, "log the consumers' rebalances")
	)
	flag.Parse()
	if *records < 3 || *partitions < 3 {
		return fmt.Errorf("-records and -partitions must be at least 3 (three phases, three members)")
	}

	stamp := time.Now().Format("20060102-150405")
	if *topic == "" {
		*topic = "quickstart-" + stamp
	}
	if *group == "" {
		*group = "quickstart-" + stamp
	}
	var (
		k   *kbatchtest.Cluster
		err error
	)
	if seeds := kbatchtest.SplitBrokers(*brokers); len(seeds) > 0 {
		k, err = kbatchtest.Connect(seeds...)
	} else {
		k, err = kbatchtest.Embedded()
		if err == nil {
			fmt.Printf("embedded kfake broker on %s\n", strings.Join(k.Brokers(), ","))
		}
	}
	if err != nil {
		return err
	}
	defer k.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := k.CreateTopic(ctx, *topic, *partitions); err != nil {
		return err
	}

	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	cfg := consumer.Config{Brokers: k.Brokers(), Group: *group, Topics: []string{*topic}, Logger: logger}
	chk := newChecker()
	// An existing topic (-topic) may hold events already: the new group
	// reads those too.
	before, err := k.EndOffsets(ctx, *topic)
	if err != nil {
		return err
	}
	total := int64(*records)
	for _, n := range before {
		total += n
	}

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

	g := &memberSet{members: map[string]*runner{}, chk: chk, total: total}
	start := time.Now()
	produced := 0
	produce := func(n int) error {
		base := produced
		fmt.Printf("  producing events %d to %d\n", base, base+n-1)
		err := k.Produce(ctx, *topic, n, kbatchtest.Values(func(i int) []byte {
			return fmt.Appendf(nil, `{"event":%d,"kind":"page_view"}`, base+i)
		}))
		produced += n
		return err
	}
	third := *records / 3

	fmt.Printf("consuming %s with group %s\n", *topic, *group)
	for _, name := range []string{"member-1", "member-2"} {
		if err := g.start(name, cfg, handler); err != nil {
			return err
		}
	}
	// Phase 1: two members.
	if err := produce(third); err != nil {
		return err
	}
	// Phase 2: member-3 joins; the next events wait until it owns partitions.
	if err := g.start("member-3", cfg, handler); err != nil {
		return err
	}
	joinedAt := chk.distinct.Load()
	if err := g.waitOwned(ctx, *partitions, "member-3 to own partitions", "member-3", "member-1", "member-2"); err != nil {
		return err
	}
	fmt.Printf("  = member-3 owns %d of %d partitions (it joined with %d of %d events handled)\n", g.owned("member-3"), *partitions, joinedAt, total)
	if err := produce(third); err != nil {
		return err
	}
	// Phase 3: member-1 leaves; the last events wait until its partitions
	// were handed over.
	fmt.Println("  - member-1 leaves the group")
	leftAt := chk.distinct.Load()
	if err := g.stop("member-1"); err != nil {
		return err
	}
	if err := g.waitOwned(ctx, *partitions, "members 2 and 3 to own every partition", "member-2", "member-3"); err != nil {
		return err
	}
	fmt.Printf("  = members 2 and 3 own all %d partitions (member-1 left with %d of %d events handled)\n", *partitions, leftAt, total)
	if err := produce(*records - 2*third); err != nil {
		return err
	}
	if err := g.waitHandled(ctx); err != nil {
		return err
	}
	elapsed := time.Since(start)

	var s consumer.Stats
	for _, name := range []string{"member-1", "member-2", "member-3"} {
		if err := g.stop(name); err != nil {
			return err
		}
		st := g.members[name].c.Stats()
		s.Records += st.Records
		s.Batches += st.Batches
		s.Commits += st.Commits
		s.Rebalances += st.Rebalances
		s.PartitionsRevoked += st.PartitionsRevoked
	}

	end, err := k.EndOffsets(ctx, *topic)
	if err != nil {
		return err
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
	// Members joined and left gracefully: a revoked partition's watermark is
	// committed before its new owner starts, so no event comes twice.
	if lost != 0 || dups != 0 || disorder != 0 {
		return fmt.Errorf("check failed: lost %d, duplicates %d, out-of-order %d", lost, dups, disorder)
	}
	if s.PartitionsRevoked == 0 {
		return fmt.Errorf("check failed: no partition changed hands, the rebalances did not happen")
	}
	return nil
}

// memberSet runs the group's members and waits on their progress, printing it.
type memberSet struct {
	members   map[string]*runner
	chk       *checker
	total     int64
	lastPrint time.Time
}

func (g *memberSet) start(name string, cfg consumer.Config, h consumer.Handler) error {
	c, err := consumer.New(cfg, h)
	if err != nil {
		return err
	}
	r := &runner{c: c, done: make(chan error, 1)}
	go func() { r.done <- c.Run(context.Background()) }()
	g.members[name] = r
	fmt.Printf("  + %s joins the group\n", name)
	return nil
}

func (g *memberSet) stop(name string) error { return g.members[name].stop() }

func (g *memberSet) owned(name string) int64 { return g.members[name].c.Stats().OwnedPartitions }

// waitOwned waits until the named members together own every partition
// and the first of them owns at least one: the rebalance has settled.
// Members named but not running count for nothing.
func (g *memberSet) waitOwned(ctx context.Context, partitions int, what string, names ...string) error {
	return g.wait(ctx, what, func() bool {
		var sum int64
		for _, n := range names {
			if r := g.members[n]; r != nil && !r.stopped.Load() {
				sum += r.c.Stats().OwnedPartitions
			}
		}
		return g.owned(names[0]) > 0 && sum == int64(partitions)
	})
}

// waitHandled waits until every event was handled.
func (g *memberSet) waitHandled(ctx context.Context) error {
	return g.wait(ctx, "every event to be handled", func() bool { return g.chk.distinct.Load() >= g.total })
}

func (g *memberSet) wait(ctx context.Context, what string, done func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s (%d of %d events handled)", what, g.chk.distinct.Load(), g.total)
		}
		if time.Since(g.lastPrint) >= 500*time.Millisecond {
			g.lastPrint = time.Now()
			got := g.chk.distinct.Load()
			fmt.Printf("  %7d / %d events (%3.0f%%)\n", got, g.total, 100*float64(got)/float64(g.total))
		}
	}
	return nil
}

type runner struct {
	c       *consumer.Consumer
	done    chan error
	once    sync.Once
	err     error
	stopped atomic.Bool
}

func (r *runner) stop() error {
	r.once.Do(func() {
		r.stopped.Store(true)
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
