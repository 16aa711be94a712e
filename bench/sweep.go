//go:build !memchild

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/kbatch/kbatch/consumer"
)

// A sweep measures the same scenarios at several points that differ in one
// thing users vary (DESIGN.md §6): every point is a run of its own, with its
// own topic, in which the scenarios go side by side, -runs times rotated.

// Defaults of the sweeps.
const (
	// defaultSweepBytes is what each point of the value-size sweep moves:
	// 2,097,152 records of 100 B, 2,048 of 100 KiB.
	defaultSweepBytes = 200 << 20
	// minSweepRecords keeps the largest values' points from being a
	// handful of fetches.
	minSweepRecords = 2000
	// defaultSweepScenarios run in a sweep unless -scenarios says otherwise.
	defaultSweepScenarios = rawKey + ",kbatch"
	// rssFlatLimit is how much a consumer's peak RSS may grow from the
	// smallest backlog of the backlog sweep to a larger one: memory must
	// not grow with the backlog.
	rssFlatLimit = 1.10
)

// sweepDef is one thing a sweep varies.
type sweepDef struct {
	Name     string // as -sweep takes it
	Axis     string // the chart's and table's name for it
	Defaults string // values when -sweep-values is not given
	parse    func(string) (int64, error)
	label    func(int64) string
	apply    func(o *options, p *point, v int64)
}

func sweepDefs() []sweepDef {
	return []sweepDef{
		{
			Name: "partitions", Axis: "partitions", Defaults: "8,64,256,1024",
			parse: parseCount, label: groupDigits,
			apply: func(_ *options, p *point, v int64) { p.Partitions = int(v) },
		},
		{
			Name: "value-size", Axis: "value size", Defaults: "100,1KiB,10KiB,100KiB",
			parse: parseSize, label: sizeLabel,
			apply: func(o *options, p *point, v int64) {
				p.ValueBytes = int(v)
				p.Records = int(max(o.sweepBytes/max(v, 1), minSweepRecords))
			},
		},
		{
			Name: "backlog", Axis: "backlog (records)", Defaults: "1M,4M",
			parse: parseCount, label: countLabel,
			apply: func(_ *options, p *point, v int64) { p.Records = int(v) },
		},
	}
}

func sweepNames() []string {
	var names []string
	for _, d := range sweepDefs() {
		names = append(names, d.Name)
	}
	return names
}

func sweepDefByName(name string) (sweepDef, bool) {
	for _, d := range sweepDefs() {
		if d.Name == name {
			return d, true
		}
	}
	return sweepDef{}, false
}

// parseSweepNames reads -sweep: names separated by commas, or all.
func parseSweepNames(list string) ([]string, error) {
	if strings.TrimSpace(list) == "all" {
		return sweepNames(), nil
	}
	var out []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if _, ok := sweepDefByName(n); !ok {
			return nil, fmt.Errorf("-sweep: unknown sweep %q (known: %s, all)", n, strings.Join(sweepNames(), ", "))
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-sweep: no sweep named in %q", list)
	}
	return out, nil
}

// sweepValues is the values of sweep name: from list, else its defaults.
func sweepValues(name, list string) ([]int64, error) {
	d, ok := sweepDefByName(name)
	if !ok {
		return nil, fmt.Errorf("-sweep: unknown sweep %q", name)
	}
	if list == "" {
		list = d.Defaults
	}
	v, err := parseList(list, d.parse)
	if err != nil {
		return nil, fmt.Errorf("-sweep-values for %s: %w", name, err)
	}
	for _, x := range v {
		if name == "value-size" && x < 1 {
			return nil, fmt.Errorf("-sweep-values for %s: sizes must be > 0", name)
		}
	}
	return v, nil
}

// sweepPoints are the points of a sweep: the flags' point with the swept
// field set to each value.
func sweepPoints(o *options, name string) ([]point, []string, error) {
	d, _ := sweepDefByName(name)
	values, err := sweepValues(name, o.sweepValues)
	if err != nil {
		return nil, nil, err
	}
	var pts []point
	var labels []string
	for _, v := range values {
		p := basePoint(o)
		d.apply(o, &p, v)
		if name != "backlog" { // the backlog sweep's counts are the point
			p.Records = wholeBatches(p.Records, p.Partitions, p.ValueBytes)
		}
		pts = append(pts, p)
		labels = append(labels, d.label(v))
	}
	return pts, labels, nil
}

// wholeBatches rounds a point's record count up so that every partition
// holds a whole number of kbatch's default batches when batches are cut by
// count (Batch.MaxRecords records of valueBytes fit in Batch.MaxBytes).
// Otherwise the last batch of each partition of a finite backlog waits
// Batch.MaxWait (200ms) for records that never come: latency, not
// throughput, and on a run of 2 s it cost kbatch a tenth of its rate (1 KiB
// values on Kafka 4.3.1: 0.773× the raw loop with 1,048,576 records,
// 0.869× with 1,048,000). Records go round-robin over the partitions, so
// a multiple of partitions × MaxRecords fills every batch.
func wholeBatches(records, partitions, valueBytes int) int {
	per := consumer.DefaultMaxRecords
	if int64(per)*int64(valueBytes+16) > consumer.DefaultMaxBytes || partitions < 1 {
		return records // cut by bytes (key lengths vary): left as it is
	}
	unit := partitions * per
	return (records + unit - 1) / unit * unit
}

// runSweeps runs each sweep of -sweep in turn on one broker, printing each
// one's table and writing sweep-<name>.json, .md and .svg to -out.
func runSweeps(ctx context.Context, o *options, stdout io.Writer) ([]*SweepReport, error) {
	outDir, err := outputDir(o.out)
	if err != nil {
		return nil, err
	}
	names, err := parseSweepNames(o.sweep)
	if err != nil {
		return nil, err
	}
	so := *o
	if so.only == "" {
		so.only = defaultSweepScenarios
	}
	table, err := selectScenarios(scenarios(), so.only)
	if err != nil {
		return nil, err
	}
	s, err := startSuite(ctx, &so, table)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	s.addJavaRef(ctx)

	var reps []*SweepReport
	for _, name := range names {
		rep, err := s.sweep(ctx, name)
		if err != nil {
			return reps, err
		}
		reps = append(reps, rep)
		rep.printTable(stdout)
		base := filepath.Join(outDir, "sweep-"+name)
		if err := rep.writeFiles(base); err != nil {
			return reps, err
		}
		fmt.Fprintf(stdout, "\nwrote %s.json, %s.md and %s.svg\n", base, base, base)
	}
	return reps, nil
}

// sweep measures every point of one sweep.
func (s *suite) sweep(ctx context.Context, name string) (*SweepReport, error) {
	d, _ := sweepDefByName(name)
	pts, labels, err := sweepPoints(s.o, name)
	if err != nil {
		return nil, err
	}
	rep := &SweepReport{
		Sweep: name, Axis: d.Axis, Command: commandLine(),
		Started: time.Now(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		CPU: cpuModel(), NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		Broker: s.b.Kind, Runs: s.o.runs, Isolated: s.isolated(),
	}
	for _, sc := range s.table {
		rep.Scenarios = append(rep.Scenarios, sc.Key)
	}
	if name == "value-size" {
		rep.SweepBytes = s.o.sweepBytes
	}
	values, _ := sweepValues(name, s.o.sweepValues)
	for i, p := range pts {
		s.prog.note("sweep %s: point %d/%d, %s = %s (%s records)", name, i+1, len(pts), d.Axis, labels[i], groupDigits(int64(p.Records)))
		r, err := s.measure(ctx, p, true)
		if err != nil {
			return nil, fmt.Errorf("sweep %s at %s: %w", name, labels[i], err)
		}
		rep.Points = append(rep.Points, SweepPoint{Value: values[i], Label: labels[i], Report: r})
	}
	rep.Finished = time.Now()
	rep.summarize()
	return rep, nil
}

// commandLine is how this program was started, for the record, written as
// the README runs it.
func commandLine() string {
	return strings.Join(append([]string{"go -C bench run ."}, os.Args[1:]...), " ")
}
