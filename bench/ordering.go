//go:build !memchild

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
)

// The ordering suite (-ordering) measures what a slow sink does to a
// partition: one partition, keyed records, and a handler that waits a fixed
// time per record (a sink's round trip). Partition order handles one record
// after another; the concurrent modes are measured against it, side by side
// in one run, with Confluent Parallel Consumer (KEY and UNORDERED) as the
// peer on a real broker. A run stops when every record is handled or at a
// deadline after the first record; its rate is (records - 1) ÷ (time from
// the first record handled to the last).

// orderingOptions are the suite's flags.
type orderingOptions struct {
	records     int
	keys        int
	work        time.Duration
	deadline    time.Duration
	concurrency string // comma-separated
	scenarios   string // comma-separated keys; empty: all
	pcSh        string
}

// orderingScenario is one row of the ordering table.
type orderingScenario struct {
	Key         string // e.g. "kbatch-keys"
	Name        string
	Concurrency int
	// PerKeyOrder: records of one key must reach the handler in offset
	// order (checked by a ledger in every run).
	PerKeyOrder bool
	// TotalOrder: every record must reach the handler in offset order
	// (the resequencer's promise); a record after a greater offset counts
	// as a violation.
	TotalOrder bool
	run        func(ctx context.Context, e *orderingEnv) (orderingRun, error)
}

// Label names the row: key and concurrency.
func (s orderingScenario) Label() string {
	if s.Concurrency <= 0 {
		return s.Key
	}
	return fmt.Sprintf("%s c=%d", s.Key, s.Concurrency)
}

// orderingEnv is what one run gets.
type orderingEnv struct {
	Brokers     []string
	Topic       string
	Group       string
	Records     int64
	Work        time.Duration
	Deadline    time.Duration
	Concurrency int
	pcSh        string
}

// orderingRun is one run's account.
type orderingRun struct {
	Handled    int64         `json:"handled"`
	Span       time.Duration `json:"span_ns"` // first record handled to last
	Violations int64         `json:"order_violations"`
	Err        string        `json:"error,omitempty"`
}

// Rate is records per second between the first and the last record handled.
func (r orderingRun) Rate() float64 {
	if r.Handled < 2 || r.Span <= 0 {
		return 0
	}
	return float64(r.Handled-1) / r.Span.Seconds()
}

// OrderingRow is one scenario's runs and medians.
type OrderingRow struct {
	Key         string        `json:"key"`
	Label       string        `json:"label"`
	Name        string        `json:"name"`
	Concurrency int           `json:"concurrency"`
	Runs        []orderingRun `json:"runs"`
	Rate        float64       `json:"records_per_sec_median"`
	VsPartition float64       `json:"vs_partition_order"`
	Violations  int64         `json:"order_violations"`
	Failed      bool          `json:"failed"`
}

// OrderingReport is the suite's outcome.
type OrderingReport struct {
	Command  string        `json:"command"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	Go       string        `json:"go"`
	CPU      string        `json:"cpu"`
	NumCPU   int           `json:"num_cpu"`
	Broker   string        `json:"broker"`
	Records  int           `json:"records"`
	Keys     int           `json:"keys"`
	Work     string        `json:"work_per_record"`
	Deadline string        `json:"deadline"`
	Runs     int           `json:"runs"`
	Rows     []OrderingRow `json:"rows"`
	Notes    []string      `json:"notes,omitempty"`
	Failed   bool          `json:"failed"`
}

// orderingTable lists the suite's scenarios at the given concurrencies.
func orderingTable(conc []int, withPC bool) []orderingScenario {
	t := []orderingScenario{{
		Key: "kbatch-partition", Name: "kbatch, partition order (the default)", PerKeyOrder: true,
		run: runOrderingPartition,
	}}
	for _, c := range conc {
		t = append(t, orderingModes(c)...)
	}
	if withPC {
		for _, c := range conc {
			t = append(t,
				orderingScenario{Key: "pc-key", Name: "Confluent Parallel Consumer 0.5.3.3, KEY order", Concurrency: c, PerKeyOrder: true, run: runParallelConsumer("KEY")},
				orderingScenario{Key: "pc-unordered", Name: "Confluent Parallel Consumer 0.5.3.3, UNORDERED", Concurrency: c, run: runParallelConsumer("UNORDERED")},
			)
		}
	}
	return t
}

// runOrdering runs the ordering suite and writes ordering.json and
// ordering.md to the output directory.
func runOrdering(ctx context.Context, o *options, stdout io.Writer) (*OrderingReport, error) {
	oo := o.ordering
	outDir, err := outputDir(o.out)
	if err != nil {
		return nil, err
	}
	conc, err := parseConcurrency(oo.concurrency)
	if err != nil {
		return nil, err
	}
	var b *broker
	if o.brokers != "" {
		b = externalBroker(strings.Split(o.brokers, ","))
	} else if b, err = startKfakeChild(o.kfakeBrokers); err != nil {
		return nil, err
	}
	defer b.Close()

	rep := &OrderingReport{
		Command: commandLine(), Started: time.Now(), Go: runtime.Version(), CPU: cpuModel(), NumCPU: runtime.NumCPU(),
		Broker: b.Kind, Records: oo.records, Keys: oo.keys, Work: oo.work.String(), Deadline: oo.deadline.String(), Runs: o.runs,
	}
	withPC := false
	switch {
	case o.brokers == "":
		rep.Notes = append(rep.Notes, "Parallel Consumer runs only against a real broker (-brokers)")
	case !o.java:
		rep.Notes = append(rep.Notes, "Parallel Consumer not run (-java=false)")
	default:
		if oo.pcSh == "" {
			oo.pcSh, err = findUp(filepath.Join("scripts", "parallel-consumer", "pc.sh"))
		}
		if err == nil {
			vctx, cancel := context.WithTimeout(ctx, o.javaTimeout)
			var out []byte
			out, err = exec.CommandContext(vctx, oo.pcSh, "version").CombinedOutput()
			cancel()
			if err != nil {
				err = fmt.Errorf("%s version: %w: %s", oo.pcSh, err, tail(out, 300))
			}
		}
		if err != nil {
			rep.Notes = append(rep.Notes, "Parallel Consumer skipped: "+err.Error())
		} else {
			withPC = true
		}
	}
	table, err := selectOrdering(orderingTable(conc, withPC), oo.scenarios)
	if err != nil {
		return nil, err
	}

	topic := uniqueName("kbatch-bench-ordering")
	spec := produceSpec{Records: oo.records, Partitions: 1, ValueBytes: 100, Keys: oo.keys, Replication: o.replication, Compression: "none", Compressible: true}
	var produced atomic.Int64
	if !o.quiet {
		fmt.Fprintf(os.Stderr, "ordering: producing %s records with %d keys to one partition ...\n", groupDigits(int64(oo.records)), oo.keys)
	}
	if _, err := prepareTopic(ctx, b.Addrs, topic, spec, &produced); err != nil {
		return nil, err
	}
	defer func() {
		if o.brokers == "" || !o.keepTopic {
			_ = deleteTopic(context.Background(), b.Addrs, topic)
		}
	}()

	rows := make([]OrderingRow, len(table))
	for i, sc := range table {
		rows[i] = OrderingRow{Key: sc.Key, Label: sc.Label(), Name: sc.Name, Concurrency: sc.Concurrency}
	}
	for run := 0; run < o.runs; run++ {
		// Rotate the order from run to run, as the main table does.
		for j := range table {
			i := (j + run) % len(table)
			sc := table[i]
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !o.quiet {
				fmt.Fprintf(os.Stderr, "ordering: run %d/%d: %s ...\n", run+1, o.runs, sc.Label())
			}
			e := &orderingEnv{
				Brokers: b.Addrs, Topic: topic, Group: uniqueName("kbatch-bench-" + sc.Key),
				Records: int64(oo.records), Work: oo.work, Deadline: oo.deadline, Concurrency: sc.Concurrency, pcSh: oo.pcSh,
			}
			r, err := sc.run(ctx, e)
			if err != nil {
				r.Err = err.Error()
			}
			if !o.quiet {
				fmt.Fprintf(os.Stderr, "ordering:   %s records, %.0f rec/s, %d order violations %s\n", groupDigits(r.Handled), r.Rate(), r.Violations, r.Err)
			}
			rows[i].Runs = append(rows[i].Runs, r)
		}
	}
	base := 0.0
	for i := range rows {
		rows[i].summarize(table[i].PerKeyOrder || table[i].TotalOrder)
		if rows[i].Key == "kbatch-partition" {
			base = rows[i].Rate
		}
		rep.Failed = rep.Failed || rows[i].Failed
	}
	for i := range rows {
		if base > 0 {
			rows[i].VsPartition = rows[i].Rate / base
		}
	}
	rep.Rows = rows
	rep.Finished = time.Now()
	rep.print(stdout)
	if err := rep.write(filepath.Join(outDir, "ordering")); err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "\nwrote %s.json and %s.md\n", filepath.Join(outDir, "ordering"), filepath.Join(outDir, "ordering"))
	return rep, nil
}

func (r *OrderingRow) summarize(perKey bool) {
	var rates []float64
	for _, run := range r.Runs {
		if run.Err != "" || run.Handled < 2 {
			r.Failed = true
			continue
		}
		rates = append(rates, run.Rate())
		r.Violations += run.Violations
	}
	if perKey && r.Violations > 0 {
		r.Failed = true
	}
	r.Rate = median(rates)
}

func (rep *OrderingReport) print(w io.Writer) {
	fmt.Fprintf(w, "\nOrdering: 1 partition, %s records, %d keys, %s per record, runs stop at %s; broker %s; %d run(s), medians\n\n",
		groupDigits(int64(rep.Records)), rep.Keys, rep.Work, rep.Deadline, rep.Broker, rep.Runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\trecords/s\t× partition order\tper-key order violations\t")
	for _, r := range rep.Rows {
		state := ""
		if r.Failed {
			state = " (FAILED)"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%.1f×\t%d\t\n", r.Label, state, groupDigits(int64(r.Rate+0.5)), r.VsPartition, r.Violations)
	}
	tw.Flush()
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func (rep *OrderingReport) write(base string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", b, 0o644); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "Ordering suite: `%s`\n\n", rep.Command)
	fmt.Fprintf(&md, "1 partition, %s records, %d keys, %s per record (a sink round trip), runs stop at %s after the first record; %s; %s, %d CPUs; %d run(s), medians.\n\n",
		groupDigits(int64(rep.Records)), rep.Keys, rep.Work, rep.Deadline, rep.Broker, rep.CPU, rep.NumCPU, rep.Runs)
	md.WriteString("| scenario | records/s | × partition order | per-key order violations |\n|---|---:|---:|---:|\n")
	for _, r := range rep.Rows {
		fmt.Fprintf(&md, "| %s | %s | %.1f× | %d |\n", r.Label, groupDigits(int64(r.Rate+0.5)), r.VsPartition, r.Violations)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&md, "\nNote: %s\n", n)
	}
	return os.WriteFile(base+".md", []byte(md.String()), 0o644)
}

// parseConcurrency reads -ordering-concurrency.
func parseConcurrency(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-ordering-concurrency: %q is not a positive number", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("-ordering-concurrency: no value")
	}
	return out, nil
}

// selectOrdering keeps the scenarios whose key is in only (all when empty).
func selectOrdering(t []orderingScenario, only string) ([]orderingScenario, error) {
	if only == "" {
		return t, nil
	}
	var out []orderingScenario
	known := map[string]bool{}
	for _, s := range t {
		known[s.Key] = true
		if containsKey(only, s.Key) {
			out = append(out, s)
		}
	}
	for _, k := range strings.Split(only, ",") {
		if k = strings.TrimSpace(k); k != "" && !known[k] {
			keys := make([]string, 0, len(known))
			for k := range known {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			return nil, fmt.Errorf("-ordering-scenarios: unknown %q (known here: %s)", k, strings.Join(keys, ", "))
		}
	}
	return out, nil
}

// orderLedger counts handled records and per-key offsets that went
// backwards, and times the first and last record handled.
type orderLedger struct {
	mu         sync.Mutex
	last       map[string]int64
	handled    int64
	violations int64
	first, end time.Time
	want       int64
	done       chan struct{}
	// total: offsets must rise across keys too.
	total   bool
	lastAny int64
	any     bool
}

func newOrderLedger(want int64) *orderLedger {
	return &orderLedger{last: map[string]int64{}, want: want, done: make(chan struct{})}
}

// add records one handled record.
func (l *orderLedger) add(r *kgo.Record) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if prev, ok := l.last[string(r.Key)]; ok && prev >= r.Offset {
		l.violations++
	} else if l.total && l.any && l.lastAny >= r.Offset {
		l.violations++
	}
	l.lastAny, l.any = r.Offset, true
	l.last[string(r.Key)] = r.Offset
	if l.handled == 0 {
		l.first = now
	}
	l.end = now
	l.handled++
	if l.handled == l.want {
		close(l.done)
	}
}

func (l *orderLedger) started() (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first, l.handled > 0
}

func (l *orderLedger) result() orderingRun {
	l.mu.Lock()
	defer l.mu.Unlock()
	return orderingRun{Handled: l.handled, Span: l.end.Sub(l.first), Violations: l.violations}
}

// wait returns when every record is handled, at the deadline after the
// first record, or when nothing arrives for two minutes.
func (l *orderLedger) wait(ctx context.Context, deadline time.Duration) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	begin := time.Now()
	for {
		select {
		case <-l.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		first, ok := l.started()
		switch {
		case ok && time.Since(first) >= deadline:
			return nil
		case !ok && time.Since(begin) > 2*time.Minute:
			return errors.New("no record handled in 2 minutes")
		}
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runKbatchOrdering runs a kbatch consumer with cfg and h until the ledger
// is satisfied, then closes it.
func runKbatchOrdering(ctx context.Context, e *orderingEnv, cfg consumer.Config, h consumer.Handler, l *orderLedger) (orderingRun, error) {
	c, err := consumer.New(cfg, h)
	if err != nil {
		return orderingRun{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(rctx) }()
	werr := l.wait(ctx, e.Deadline)
	r := l.result()
	cancel()
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		return r, err
	}
	return r, werr
}

// orderingConfig is kbatch's defaults on the suite's topic.
func orderingConfig(e *orderingEnv) consumer.Config {
	return consumer.Config{
		Brokers: e.Brokers, Group: e.Group, Topics: []string{e.Topic},
		Logger: slog.New(slog.DiscardHandler),
	}
}

// runOrderingPartition is kbatch's default mode: one batch of the
// partition at a time, each record waiting e.Work.
func runOrderingPartition(ctx context.Context, e *orderingEnv) (orderingRun, error) {
	l := newOrderLedger(e.Records)
	return runKbatchOrdering(ctx, e, orderingConfig(e), func(ctx context.Context, b *consumer.Batch) error {
		for _, r := range b.Records {
			if err := sleepCtx(ctx, e.Work); err != nil {
				return err
			}
			l.add(r)
		}
		return nil
	}, l)
}

// runParallelConsumer runs Confluent Parallel Consumer in the given order
// through scripts/parallel-consumer/pc.sh.
func runParallelConsumer(order string) func(ctx context.Context, e *orderingEnv) (orderingRun, error) {
	return func(ctx context.Context, e *orderingEnv) (orderingRun, error) {
		cctx, cancel := context.WithTimeout(ctx, e.Deadline+3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, e.pcSh, "run", strings.Join(e.Brokers, ","), e.Topic, e.Group, order,
			strconv.Itoa(e.Concurrency), strconv.FormatInt(e.Records, 10),
			strconv.FormatInt(e.Work.Milliseconds(), 10), strconv.FormatInt(e.Deadline.Milliseconds(), 10))
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return orderingRun{}, fmt.Errorf("parallel consumer: %w: %s", err, tail(ee.Stderr, 400))
			}
			return orderingRun{}, fmt.Errorf("parallel consumer: %w", err)
		}
		return parsePCLine(out)
	}
}

// parsePCLine reads PCBench's result line: handled=N span_ns=N
// order_violations=N.
func parsePCLine(out []byte) (orderingRun, error) {
	var r orderingRun
	found := false
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "handled=") {
			continue
		}
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return r, fmt.Errorf("parallel consumer: bad %s in %q", k, line)
			}
			switch k {
			case "handled":
				r.Handled = n
			case "span_ns":
				r.Span = time.Duration(n)
			case "order_violations":
				r.Violations = n
			}
		}
		found = true
	}
	if !found {
		return r, fmt.Errorf("parallel consumer: no result line in %q", tail(out, 300))
	}
	return r, nil
}
