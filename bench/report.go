//go:build !memchild

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"
)

// Report is the suite's output: written as JSON, printed as a table, drawn
// as a chart.
type Report struct {
	Started    time.Time        `json:"started"`
	Finished   time.Time        `json:"finished"`
	Go         string           `json:"go"`
	OS         string           `json:"os"`
	CPU        string           `json:"cpu"`
	NumCPU     int              `json:"num_cpu"`
	GOMAXPROCS int              `json:"gomaxprocs"`
	Broker     string           `json:"broker"`
	Brokers    []string         `json:"brokers"`
	Params     Params           `json:"params"`
	Data       *dataset         `json:"data"`
	Scenarios  []ScenarioReport `json:"scenarios"`
	Targets    []Target         `json:"targets"`
	Notes      []string         `json:"notes"`
	Failed     bool             `json:"failed"` // some scenario missed records or failed in some run
}

// Params are the flags that shape the measurement.
type Params struct {
	Records     int    `json:"records"`
	Partitions  int    `json:"partitions"`
	ValueBytes  int    `json:"value_bytes"`
	Keys        int    `json:"keys"`
	Compression string `json:"compression"`
	// Compressible values are text (the memory check's), not random bytes.
	Compressible bool   `json:"compressible,omitempty"`
	Runs         int    `json:"runs"`
	SyncRecords  int    `json:"sync_records"`
	Work         string `json:"work"`
	// BatchRecords is Batch.MaxRecords of the kbatch scenarios when
	// -batch-records set it (0: kbatch's default).
	BatchRecords int    `json:"batch_records,omitempty"`
	Stall        string `json:"stall"`
	Scenarios    string `json:"scenarios"`
	// Isolated: every scenario ran in a process of its own (-isolate).
	Isolated bool `json:"isolated"`
}

// ScenarioReport is one scenario over all runs.
type ScenarioReport struct {
	Key      string      `json:"key"`
	Name     string      `json:"name"`
	Subset   bool        `json:"subset"`
	External bool        `json:"external"`
	Want     int64       `json:"records_per_run"`
	OKRuns   int         `json:"ok_runs"`
	Median   Summary     `json:"median"` // over the runs that received every record
	Runs     []RunResult `json:"runs"`
}

// Summary holds the medians of a scenario's successful runs. Ratio is the
// median of the per-run ratios (each taken against the raw loop of the same
// run), with their range.
type Summary struct {
	RecordsPerSec   float64 `json:"records_per_sec"`
	MBPerSec        float64 `json:"mib_per_sec"`
	Ratio           float64 `json:"ratio_to_raw"`
	RatioMin        float64 `json:"ratio_min"`
	RatioMax        float64 `json:"ratio_max"`
	Commits         float64 `json:"commits"`
	OwnCommits      float64 `json:"own_commits"`
	AllocsPerRecord float64 `json:"allocs_per_record"`
	BytesPerRecord  float64 `json:"alloc_bytes_per_record"`
	CPUPerRecordNs  float64 `json:"cpu_ns_per_record"`
	PeakHeapInuse   float64 `json:"peak_heap_inuse_bytes"`
	PeakRSS         float64 `json:"peak_rss_bytes"`
	WallSec         float64 `json:"wall_sec"`
	ScaledWallSec   float64 `json:"scaled_wall_sec"`
}

// Target is one of kbatch's performance goals, reported and never asserted.
type Target struct {
	What  string  `json:"what"`
	Value float64 `json:"value"` // median of the per-run ratios; NaN-free: 0 when unknown
	Goal  string  `json:"goal"`
	Met   *bool   `json:"met"` // nil when it could not be measured
}

// summarize fills in ratios (per run, against that run's raw loop), medians
// and targets.
func (r *Report) summarize() {
	raw := r.scenario(rawKey)
	rawRate := map[int]float64{}
	if raw != nil {
		for _, rr := range raw.Runs {
			if rr.OK && rr.RecordsPerSec > 0 {
				rawRate[rr.Run] = rr.RecordsPerSec
			}
		}
	}
	r.Failed = false
	for i := range r.Scenarios {
		s := &r.Scenarios[i]
		var ok []RunResult
		for j := range s.Runs {
			rr := &s.Runs[j]
			if base := rawRate[rr.Run]; base > 0 && rr.OK {
				rr.Ratio = rr.RecordsPerSec / base
			}
			if rr.OK {
				ok = append(ok, *rr)
			} else {
				r.Failed = true
			}
		}
		s.OKRuns = len(ok)
		s.Median = summaryOf(ok)
	}
	r.Targets = r.targets()
	for _, s := range r.Scenarios {
		if s.OKRuns > 0 && !s.External {
			var el []float64
			for _, rr := range s.Runs {
				if rr.OK {
					el = append(el, rr.ElapsedSec)
				}
			}
			if e := median(el); e < minReliableElapsed {
				r.Notes = append(r.Notes, fmt.Sprintf("%s received its records within %.0f ms: too short for a reliable rate; use more -records", s.Key, e*1000))
			}
		}
	}
}

// minReliableElapsed is the shortest first-to-last-record time whose rate
// the report trusts: below it, one fetch may have carried everything.
const minReliableElapsed = 0.2

func summaryOf(runs []RunResult) Summary {
	if len(runs) == 0 {
		return Summary{}
	}
	pick := func(f func(RunResult) float64) float64 {
		v := make([]float64, 0, len(runs))
		for _, r := range runs {
			v = append(v, f(r))
		}
		return median(v)
	}
	var ratios []float64
	for _, r := range runs {
		if r.Ratio > 0 {
			ratios = append(ratios, r.Ratio)
		}
	}
	s := Summary{
		RecordsPerSec:   pick(func(r RunResult) float64 { return r.RecordsPerSec }),
		MBPerSec:        pick(func(r RunResult) float64 { return r.MBPerSec }),
		Ratio:           median(ratios),
		Commits:         pick(func(r RunResult) float64 { return float64(r.Commits) }),
		OwnCommits:      pick(func(r RunResult) float64 { return float64(r.OwnCommits) }),
		AllocsPerRecord: pick(func(r RunResult) float64 { return r.AllocsPerRecord }),
		BytesPerRecord:  pick(func(r RunResult) float64 { return r.BytesPerRecord }),
		CPUPerRecordNs:  pick(func(r RunResult) float64 { return r.CPUPerRecordNs }),
		PeakHeapInuse:   pick(func(r RunResult) float64 { return float64(r.PeakHeapInuse) }),
		PeakRSS:         pick(func(r RunResult) float64 { return float64(r.PeakRSS) }),
		WallSec:         pick(func(r RunResult) float64 { return r.WallSec }),
		ScaledWallSec:   pick(func(r RunResult) float64 { return r.ScaledWallSec }),
	}
	if len(ratios) > 0 {
		s.RatioMin, s.RatioMax = minMax(ratios)
	}
	return s
}

// median of v; 0 for none. v is reordered.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func minMax(v []float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

func (r *Report) scenario(key string) *ScenarioReport {
	for i := range r.Scenarios {
		if r.Scenarios[i].Key == key {
			return &r.Scenarios[i]
		}
	}
	return nil
}

// sideBySide is the median over runs of a's rate divided by b's rate in the
// same run; 0 when no run has both.
func (r *Report) sideBySide(a, b string) float64 {
	sa, sb := r.scenario(a), r.scenario(b)
	if sa == nil || sb == nil {
		return 0
	}
	rate := map[int]float64{}
	for _, rr := range sb.Runs {
		if rr.OK && rr.RecordsPerSec > 0 {
			rate[rr.Run] = rr.RecordsPerSec
		}
	}
	var v []float64
	for _, rr := range sa.Runs {
		if base := rate[rr.Run]; base > 0 && rr.OK {
			v = append(v, rr.RecordsPerSec/base)
		}
	}
	return median(v)
}

// targets are the performance goals for kbatch's defaults.
func (r *Report) targets() []Target {
	goal := func(what, other string, atLeast float64, goal string) Target {
		return r.goal(what, "kbatch", other, atLeast, goal)
	}
	return []Target{
		goal("kbatch ÷ franz-go raw loop", rawKey, 0.95, "≥ 0.95"),
		goal("kbatch ÷ kafka-go", "kafka-go", 1, "> 1 (ahead)"),
		goal("kbatch ÷ sarama", "sarama", 1, "> 1 (ahead)"),
		goal("kbatch ÷ per-record sync commit", "franz-sync", 200, "≥ 200"),
		// What a dedupe store costs: kbatch with it against kbatch
		// without it, side by side in one run (issue 9).
		r.goal("memory dedupe store ÷ kbatch", "kbatch-dedupe-mem", "kbatch", 0.85, "≥ 0.85"),
		r.goal("Kafka dedupe store ÷ kbatch", "kbatch-dedupe-kafka", "kbatch", 0.6, "≥ 0.6"),
	}
}

// goal is the target that a's rate, divided by b's in the same run, is at
// least atLeast.
func (r *Report) goal(what, a, b string, atLeast float64, goal string) Target {
	v := r.sideBySide(a, b)
	t := Target{What: what, Value: v, Goal: goal}
	if v > 0 {
		met := v >= atLeast
		t.Met = &met
	}
	return t
}

// writeJSON writes the report to path.
func (r *Report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// printTable writes the table of medians and the targets.
func (r *Report) printTable(w io.Writer) {
	p := r.Params
	if r.Data != nil && !r.Data.Created {
		fmt.Fprintf(w, "\nkbatch bench: existing topic %s, %s records, %d partitions; broker: %s\n",
			r.Data.Topic, groupDigits(int64(p.Records)), p.Partitions, r.Broker)
	} else {
		fmt.Fprintf(w, "\nkbatch bench: %s records of %d B values (keys: %s), %d partitions, compression %s; broker: %s\n",
			groupDigits(int64(p.Records)), p.ValueBytes, keysText(p.Keys), p.Partitions, p.Compression, r.Broker)
	}
	fmt.Fprintf(w, "medians of %d runs (order rotated each run); %s, GOMAXPROCS %d, %d CPUs (%s)\n\n",
		p.Runs, r.Go, r.GOMAXPROCS, r.NumCPU, r.CPU)

	head := []string{"scenario", "records/s", "MiB/s", "× raw", "(range)", "commits", "allocs/rec", "CPU/rec", "peak heap", "peak RSS", "wall", "runs ok"}
	rows := [][]string{head}
	var foot []string
	for _, s := range r.Scenarios {
		name := s.Name
		m := s.Median
		if s.Subset {
			name += " *"
		}
		row := []string{name}
		if s.OKRuns == 0 {
			row = append(row, "FAILED", "", "", "", "", "", "", "", "", "", fmt.Sprintf("0/%d", len(s.Runs)))
			rows = append(rows, row)
			continue
		}
		ratio, rng := "n/a", ""
		if m.Ratio > 0 {
			ratio = fmt.Sprintf("%.3f", m.Ratio)
			rng = fmt.Sprintf("(%.2f–%.2f)", m.RatioMin, m.RatioMax)
		}
		commits := "n/a"
		if !s.External && m.Commits >= 0 {
			commits = fmt.Sprintf("%.0f", m.Commits)
			if m.OwnCommits >= 0 && m.OwnCommits != m.Commits {
				commits += fmt.Sprintf(" (own %.0f)", m.OwnCommits)
			}
		}
		allocs, cpu, heap, rss := "n/a", "n/a", "n/a", "n/a"
		if !s.External {
			allocs = fmt.Sprintf("%.2f", m.AllocsPerRecord)
			cpu = fmt.Sprintf("%.2f µs", m.CPUPerRecordNs/1e3)
			heap = bytesText(m.PeakHeapInuse)
			if m.PeakRSS > 0 {
				rss = bytesText(m.PeakRSS)
			}
		}
		wall := fmt.Sprintf("%.1fs", m.WallSec)
		if s.Subset {
			wall = fmt.Sprintf("~%.0fs", m.ScaledWallSec)
		}
		row = append(row,
			groupDigits(int64(m.RecordsPerSec)),
			fmt.Sprintf("%.1f", m.MBPerSec),
			ratio, rng, commits, allocs, cpu, heap, rss, wall,
			fmt.Sprintf("%d/%d", s.OKRuns, len(s.Runs)))
		rows = append(rows, row)
		if s.Subset {
			foot = append(foot, fmt.Sprintf("* %s read %s records per run (the first of each partition): its rate and commits are for those; its wall time is scaled to %s records.",
				s.Key, groupDigits(s.Want), groupDigits(int64(p.Records))))
		}
	}
	printAligned(w, rows)
	fmt.Fprintln(w)
	for _, f := range foot {
		fmt.Fprintln(w, f)
	}
	fmt.Fprintln(w, "records/s and MiB/s run from the client's first Fetch request (once it joined) to the last record (group join and close left out); wall is the whole scenario.")
	fmt.Fprintln(w, "commits: OffsetCommit requests the client wrote, counted on its connections (own: the client's own count, where it differs).")
	if p.Isolated {
		fmt.Fprintln(w, "allocs/rec, CPU/rec (user+sys), peak heap (sampled HeapInuse) and peak RSS (VmHWM, the whole process): the scenario's own process, started for each run.")
	} else {
		fmt.Fprintln(w, "allocs/rec, CPU/rec (user+sys), peak heap (sampled HeapInuse) and peak RSS (VmHWM, reset per scenario): this process, i.e. the client alone unless kfake runs in process.")
	}
	for _, s := range r.Scenarios {
		for _, rr := range s.Runs {
			if !rr.OK {
				fmt.Fprintf(w, "FAILED %s run %d: %s\n", s.Key, rr.Run, rr.Error)
			}
		}
	}
	for _, s := range r.Scenarios {
		if line := clientStatsLine(s); line != "" {
			fmt.Fprintf(w, "%s: %s\n", s.Key, line)
		}
	}
	fmt.Fprintln(w, "\ntargets (reported, not asserted; medians of per-run ratios):")
	for _, t := range r.Targets {
		verdict := "not measured"
		if t.Met != nil {
			verdict = "met"
			if !*t.Met {
				verdict = "NOT met"
			}
		}
		fmt.Fprintf(w, "  %-34s %9s   goal %-12s %s\n", t.What, ratioText(t.Value), t.Goal, verdict)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func ratioText(v float64) string {
	if v <= 0 {
		return "n/a"
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f×", v)
	}
	return fmt.Sprintf("%.3f×", v)
}

func keysText(k int) string {
	if k == 0 {
		return "none"
	}
	return groupDigits(int64(k)) + " distinct"
}

// printAligned prints rows in columns: the first left-aligned, the others
// right-aligned.
func printAligned(w io.Writer, rows [][]string) {
	width := map[int]int{}
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

func bytesText(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

// clientStatsLine is the medians of a scenario's own counters, on one line
// (kbatch: batches, partition pauses, peak buffered records).
func clientStatsLine(s ScenarioReport) string {
	keys := []string{"batches", "pauses", "peak_buffered_records", "skipped", "store_us_per_batch"}
	var parts []string
	for _, k := range keys {
		var v []float64
		for _, rr := range s.Runs {
			if x, ok := rr.ClientStats[k]; ok && rr.OK {
				v = append(v, float64(x))
			}
		}
		if len(v) > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", strings.ReplaceAll(k, "_", " "), groupDigits(int64(median(v)))))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "median per run: " + strings.Join(parts, ", ")
}
