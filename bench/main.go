//go:build !memchild

// Command bench measures kbatch's end-to-end consuming throughput side by
// side with a raw franz-go poll loop (the ceiling), per-record synchronous
// commits (the anti-pattern), segmentio/kafka-go, IBM/sarama and, on a real
// broker, Kafka's own Java ConsumerPerformance.
//
// With no flags it starts an embedded kfake broker, pre-produces one topic,
// consumes it in every scenario, one after another with a fresh group each,
// repeats that -runs times in rotated orders, and prints a table of medians
// (records/s, MiB/s, ratio to the raw loop, commits, allocations per record,
// peak heap and RSS, wall time). It writes results.json and chart.svg to
// -out. Every scenario checks it received every record; the program exits 1
// when one did not. Each scenario run is a process of its own, so that its
// peak RSS is its own.
//
// With -sweep it measures the scenarios at every point of a range
// (partitions, value size, backlog) and writes a table, JSON and a chart of
// the ratios against the swept variable; with -memcheck it measures the peak
// RSS of a bounded kbatch consumer with a slow handler per backlog, and
// exits 1 when it exceeds the bound plus a documented constant. See
// README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// options are the flags.
type options struct {
	brokers      string
	kfakeBrokers int
	kfakeInProc  bool
	topic        string
	keepTopic    bool
	replication  int

	records     int
	partitions  int
	valueBytes  int
	keys        int
	compression string

	runs        int
	syncRecords int
	work        time.Duration
	batchRecs   int // Batch.MaxRecords of the kbatch scenarios; 0: kbatch's default
	stall       time.Duration
	only        string

	java        bool
	kafkaSh     string
	javaTimeout time.Duration

	out        string
	cpuprofile string
	quiet      bool
	isolate    bool

	sweep       string // comma-separated sweep names; empty: one point
	sweepValues string // the values of a single sweep; empty: its defaults
	sweepBytes  int64  // value bytes per point of the value-size sweep

	memcheck        bool
	memBacklogs     string
	memRecordWait   time.Duration
	memSlack        int64
	memChildTimeout time.Duration

	orderingMode bool
	ordering     orderingOptions
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.brokers, "brokers", "", "seed brokers of a real cluster, host:port,...; empty: an embedded kfake broker")
	fs.IntVar(&o.kfakeBrokers, "kfake-brokers", 3, "brokers in the embedded kfake cluster")
	fs.BoolVar(&o.kfakeInProc, "kfake-inproc", false, "run kfake in this process instead of a child process (its CPU, allocations and heap then count as the client's)")
	fs.StringVar(&o.topic, "topic", "", "topic to use; default a new kbatch-bench-<random>. An existing topic that holds records is reused as it is")
	fs.BoolVar(&o.keepTopic, "keep-topic", false, "with -brokers, keep the topic the bench created instead of deleting it")
	fs.IntVar(&o.replication, "replication", 1, "replication factor of the created topic")
	fs.IntVar(&o.records, "records", 2_000_000, "records to pre-produce (every scenario reads them all, but franz-sync)")
	fs.IntVar(&o.partitions, "partitions", 8, "partitions of the topic (records spread round-robin)")
	fs.IntVar(&o.valueBytes, "value-size", 100, "bytes per record value (random)")
	fs.IntVar(&o.keys, "keys", 100_000, `distinct record keys "key-<n>", cycled; 0: records have no key`)
	fs.StringVar(&o.compression, "compression", "none", "compression of the produced batches: none, gzip, snappy, lz4, zstd")
	fs.IntVar(&o.runs, "runs", 3, "runs of every scenario; the table shows medians")
	fs.IntVar(&o.syncRecords, "sync-records", 20_000, "records the per-record-commit scenario (franz-sync) reads; its wall time is scaled to -records")
	fs.IntVar(&o.batchRecs, "batch-records", 0, "Batch.MaxRecords of every kbatch scenario (0: kbatch's default, 1000): how the per-batch costs (a dedupe store's round trip) move with the batch bound")
	fs.DurationVar(&o.work, "work", time.Millisecond, "simulated work per batch in kbatch-work: a wait this long (a sink's round trip), after a checksum of every value")
	fs.DurationVar(&o.stall, "stall", 30*time.Second, "a scenario that receives nothing for this long is stopped and reported failed")
	fs.StringVar(&o.only, "scenarios", "", "comma-separated scenario keys to run (default all): "+strings.Join(scenarioKeys(), ", ")+", java-perf")
	fs.BoolVar(&o.java, "java", true, "with -brokers, also run Kafka's ConsumerPerformance (Java) through scripts/kafka/kafka.sh, when it and java are available")
	fs.StringVar(&o.kafkaSh, "kafka-sh", "", "path of scripts/kafka/kafka.sh; default: found from the working directory upwards")
	fs.DurationVar(&o.javaTimeout, "java-timeout", 10*time.Minute, "bound on one ConsumerPerformance run, and on resolving its jars")
	fs.StringVar(&o.out, "out", "", "directory for results.json and chart.svg; default bench-results/ at the repository root")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the scenarios to this file (pprof label scenario=<key>: go tool pprof -tagfocus scenario=kbatch ...)")
	fs.BoolVar(&o.quiet, "q", false, "quiet: no progress display, only the table")
	fs.BoolVar(&o.isolate, "isolate", true, "run every scenario in a process of its own (this program started again), so that its peak RSS is its own; off with -cpuprofile")
	fs.StringVar(&o.sweep, "sweep", "", "measure over a range instead of one point: "+strings.Join(sweepNames(), ", ")+" (comma-separated for several, or all)")
	fs.StringVar(&o.sweepValues, "sweep-values", "", "the values of a single -sweep (default: partitions 8,64,256,1024; value-size 100,1KiB,10KiB,100KiB; backlog 1M,4M)")
	o.sweepBytes = defaultSweepBytes
	fs.Var((*sizeFlag)(&o.sweepBytes), "sweep-bytes", "value-size sweep: value bytes each point moves; its records are this divided by the value size (at least 2,000)")
	fs.BoolVar(&o.memcheck, "memcheck", false, "run the memory-bound check instead of the table: peak RSS of a bounded kbatch consumer with a slow handler, per backlog")
	fs.StringVar(&o.memBacklogs, "memcheck-backlogs", "1M,3M", "memory check: the backlogs (records) to consume")
	fs.DurationVar(&o.memRecordWait, "memcheck-wait", 10*time.Microsecond, "memory check: the handler's wait per record of a batch (a slow handler)")
	o.memSlack = defaultMemSlack
	fs.DurationVar(&o.memChildTimeout, "memcheck-build-timeout", 5*time.Minute, "memory check: bound on building the consumer program it measures (go build -tags memchild)")
	fs.Var((*sizeFlag)(&o.memSlack), "memcheck-slack", "memory check: the constant allowed over MaxBufferedBytes (the process's own baseline; see README)")
	fs.BoolVar(&o.orderingMode, "ordering", false, "run the ordering suite instead of the table: one partition, a handler waiting -ordering-work per record, partition order against the concurrent modes (and Confluent Parallel Consumer with -brokers)")
	fs.IntVar(&o.ordering.records, "ordering-records", 100_000, "ordering suite: records on the partition (a run stops when all are handled or at -ordering-time)")
	fs.IntVar(&o.ordering.keys, "ordering-keys", 1000, "ordering suite: distinct record keys")
	fs.DurationVar(&o.ordering.work, "ordering-work", 5*time.Millisecond, "ordering suite: the handler's wait per record (a sink round trip)")
	fs.DurationVar(&o.ordering.deadline, "ordering-time", 8*time.Second, "ordering suite: a run stops this long after its first record")
	fs.StringVar(&o.ordering.concurrency, "ordering-concurrency", "1,8,64", "ordering suite: the concurrencies of the concurrent modes")
	fs.StringVar(&o.ordering.scenarios, "ordering-scenarios", "", "ordering suite: scenario keys to run (default all)")
	fs.StringVar(&o.ordering.pcSh, "pc-sh", "", "path of scripts/parallel-consumer/pc.sh; default: found from the working directory upwards")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	switch {
	case o.records < 1:
		return nil, errors.New("-records must be > 0")
	case o.partitions < 1:
		return nil, errors.New("-partitions must be > 0")
	case o.valueBytes < 0:
		return nil, errors.New("-value-size must be >= 0")
	case o.keys < 0:
		return nil, errors.New("-keys must be >= 0")
	case o.batchRecs < 0:
		return nil, errors.New("-batch-records must be >= 0 (0: kbatch's default)")
	case o.runs < 1:
		return nil, errors.New("-runs must be > 0")
	case o.syncRecords < 1:
		return nil, errors.New("-sync-records must be > 0")
	case o.kfakeBrokers < 1:
		return nil, errors.New("-kfake-brokers must be > 0")
	case o.stall <= 0:
		return nil, errors.New("-stall must be > 0")
	}
	if _, err := compressionCodec(o.compression); err != nil {
		return nil, fmt.Errorf("-compression: %w", err)
	}
	if err := checkModeFlags(o); err != nil {
		return nil, err
	}
	return o, nil
}

func scenarioKeys() []string {
	var keys []string
	for _, s := range scenarios() {
		keys = append(keys, s.Key)
	}
	return keys
}

func main() {
	if n := os.Getenv(childEnv); n != "" {
		os.Exit(serveKfakeChild(n))
	}
	if os.Getenv(scenarioChildEnv) != "" {
		os.Exit(serveScenarioChild())
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var failed bool
	switch {
	case o.orderingMode:
		var rep *OrderingReport
		if rep, err = runOrdering(ctx, o, os.Stdout); err == nil {
			failed = rep.Failed
		}
	case o.memcheck:
		var rep *MemReport
		if rep, err = runMemCheck(ctx, o, os.Stdout); err == nil {
			failed = rep.Failed || !rep.Met
		}
	case o.sweep != "":
		var reps []*SweepReport
		reps, err = runSweeps(ctx, o, os.Stdout)
		for _, r := range reps {
			failed = failed || r.Failed
		}
	default:
		var rep *Report
		if rep, err = run(ctx, o, os.Stdout); err == nil {
			failed = rep.Failed
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if failed {
		os.Exit(1)
	}
}

// checkModeFlags refuses sweep and memory-check flags that cannot work
// together.
func checkModeFlags(o *options) error {
	switch {
	case o.memcheck && o.sweep != "", o.orderingMode && (o.memcheck || o.sweep != ""):
		return errors.New("-memcheck, -sweep and -ordering are separate modes: give one")
	case o.orderingMode && (o.ordering.records < 2 || o.ordering.keys < 1 || o.ordering.work < 0 || o.ordering.deadline <= 0):
		return errors.New("-ordering needs -ordering-records >= 2, -ordering-keys >= 1, -ordering-work >= 0 and -ordering-time > 0")
	case (o.memcheck || o.sweep != "") && o.topic != "":
		return errors.New("-topic cannot be used with -sweep or -memcheck: every point needs a topic of its own")
	case o.sweepBytes < 1:
		return errors.New("-sweep-bytes must be > 0")
	case o.memSlack < 0:
		return errors.New("-memcheck-slack must be >= 0")
	case o.memRecordWait < 0:
		return errors.New("-memcheck-wait must be >= 0")
	}
	if o.sweep != "" {
		names, err := parseSweepNames(o.sweep)
		if err != nil {
			return err
		}
		if o.sweepValues != "" && len(names) > 1 {
			return errors.New("-sweep-values needs a single -sweep")
		}
		for _, n := range names {
			if _, err := sweepValues(n, o.sweepValues); err != nil {
				return err
			}
		}
		if o.only != "" && !containsKey(o.only, rawKey) {
			return fmt.Errorf("-sweep needs %s among -scenarios: every ratio is taken against it", rawKey)
		}
	}
	if o.memcheck {
		if _, err := parseCounts(o.memBacklogs); err != nil {
			return fmt.Errorf("-memcheck-backlogs: %w", err)
		}
	}
	return nil
}

// run measures one point, the one the flags describe: the table goes to
// stdout, progress to stderr, results.json and chart.svg to -out.
func run(ctx context.Context, o *options, stdout io.Writer) (*Report, error) {
	outDir, err := outputDir(o.out)
	if err != nil {
		return nil, err
	}
	table, err := selectScenarios(scenarios(), o.only)
	if err != nil {
		return nil, err
	}
	s, err := startSuite(ctx, o, table)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	s.addJavaRef(ctx)

	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}

	rep, err := s.measure(ctx, basePoint(o), false)
	if err != nil {
		return nil, err
	}
	rep.printTable(stdout)

	jsonPath, svgPath := filepath.Join(outDir, "results.json"), filepath.Join(outDir, "chart.svg")
	if err := rep.writeJSON(jsonPath); err != nil {
		return nil, err
	}
	if err := rep.writeChart(svgPath); err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "\nwrote %s and %s\n", jsonPath, svgPath)
	return rep, nil
}

// selectScenarios keeps the scenarios named in only (all when empty).
func selectScenarios(all []Scenario, only string) ([]Scenario, error) {
	if only == "" {
		return all, nil
	}
	known := map[string]bool{"java-perf": true}
	for _, s := range all {
		known[s.Key] = true
	}
	for _, k := range strings.Split(only, ",") {
		if !known[strings.TrimSpace(k)] {
			return nil, fmt.Errorf("-scenarios: unknown scenario %q (known: %s, java-perf)", k, strings.Join(scenarioKeys(), ", "))
		}
	}
	var out []Scenario
	for _, s := range all {
		if containsKey(only, s.Key) {
			out = append(out, s)
		}
	}
	return out, nil
}

func containsKey(list, key string) bool {
	for _, k := range strings.Split(list, ",") {
		if strings.TrimSpace(k) == key {
			return true
		}
	}
	return false
}

// outputDir makes and returns the output directory: dir if set, else
// bench-results/ at the repository root (the directory holding both go.mod
// and bench/go.mod, which .gitignore covers), else ./bench-results.
func outputDir(dir string) (string, error) {
	if dir == "" {
		dir = "bench-results"
		if root, err := findUp(filepath.Join("bench", "go.mod")); err == nil {
			dir = filepath.Join(filepath.Dir(filepath.Dir(root)), "bench-results")
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("making output directory: %w", err)
	}
	return dir, nil
}

// cpuModel reads the CPU's name from /proc/cpuinfo, where there is one.
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(data), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return runtime.GOARCH
}
