//go:build !memchild

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// SweepReport is one sweep: a Report per point, and what the points say
// together. Written as JSON and markdown, printed, drawn.
type SweepReport struct {
	Sweep      string        `json:"sweep"` // partitions, value-size, backlog
	Axis       string        `json:"axis"`
	Command    string        `json:"command"`
	Started    time.Time     `json:"started"`
	Finished   time.Time     `json:"finished"`
	Go         string        `json:"go"`
	OS         string        `json:"os"`
	CPU        string        `json:"cpu"`
	NumCPU     int           `json:"num_cpu"`
	GOMAXPROCS int           `json:"gomaxprocs"`
	Broker     string        `json:"broker"`
	Runs       int           `json:"runs"`
	Isolated   bool          `json:"isolated"` // each scenario run in a process of its own
	Scenarios  []string      `json:"scenarios"`
	SweepBytes int64         `json:"sweep_bytes,omitempty"` // value-size sweep: value bytes per point
	Points     []SweepPoint  `json:"points"`
	RSS        []RSSFlatness `json:"rss_flatness,omitempty"` // the backlog sweep's
	Failed     bool          `json:"failed"`                 // some scenario missed records or failed at some point
}

// SweepPoint is one point of a sweep.
type SweepPoint struct {
	Value  int64   `json:"value"` // of the swept variable, in its unit (partitions, bytes, records)
	Label  string  `json:"label"`
	Report *Report `json:"report"`
}

// RSSFlatness compares a scenario's median peak RSS at a larger backlog
// with the smallest one's: within rssFlatLimit, memory is flat.
type RSSFlatness struct {
	Scenario string  `json:"scenario"`
	From     string  `json:"from"`
	To       string  `json:"to"`
	FromRSS  float64 `json:"from_peak_rss_bytes"`
	ToRSS    float64 `json:"to_peak_rss_bytes"`
	Ratio    float64 `json:"ratio"`
	Limit    float64 `json:"limit"`
	Met      *bool   `json:"met"` // nil when either point has no RSS
}

// summarize marks the sweep failed when any point failed and, for the
// backlog sweep, compares peak RSS across backlogs.
func (r *SweepReport) summarize() {
	r.Failed = false
	for _, p := range r.Points {
		r.Failed = r.Failed || p.Report.Failed
	}
	r.RSS = nil
	if r.Sweep != "backlog" || len(r.Points) < 2 {
		return
	}
	first := r.Points[0]
	for _, key := range r.Scenarios {
		base := first.Report.scenario(key)
		for _, p := range r.Points[1:] {
			s := p.Report.scenario(key)
			if base == nil || s == nil {
				continue
			}
			f := RSSFlatness{Scenario: key, From: first.Label, To: p.Label, Limit: rssFlatLimit}
			if base.OKRuns > 0 && s.OKRuns > 0 && base.Median.PeakRSS > 0 && s.Median.PeakRSS > 0 {
				f.FromRSS, f.ToRSS = base.Median.PeakRSS, s.Median.PeakRSS
				f.Ratio = f.ToRSS / f.FromRSS
				met := f.Ratio <= f.Limit
				f.Met = &met
			}
			r.RSS = append(r.RSS, f)
		}
	}
}

// printTable writes the sweep's heading and its markdown table (what
// writeFiles puts in the .md file, without the command line).
func (r *SweepReport) printTable(w io.Writer) {
	fmt.Fprintln(w)
	r.writeMarkdown(w, false)
}

// writeMarkdown writes the sweep as markdown: a heading, one table row per
// point and scenario, the ratios per point, the RSS comparison, failures.
func (r *SweepReport) writeMarkdown(w io.Writer, withCommand bool) {
	fmt.Fprintf(w, "## kbatch bench sweep: %s\n\n", r.Axis)
	if withCommand {
		fmt.Fprintf(w, "`%s`\n\n", r.Command)
	}
	if len(r.Points) > 0 {
		p := r.Points[0].Report.Params
		parts := map[string][]string{
			"partitions": {"about " + groupDigits(int64(p.Records)) + " records, rounded up to whole batches of kbatch's in every partition (see the records column)", fmt.Sprintf("%d B values", p.ValueBytes)},
			"value-size": {fmt.Sprintf("%d partitions", p.Partitions), fmt.Sprintf("records scaled down as values grow, so that each point moves about %s of values, and rounded up to whole batches of kbatch's in every partition where batches are cut by count", sizeLabel(r.SweepBytes))},
			"backlog":    {fmt.Sprintf("%d partitions", p.Partitions), fmt.Sprintf("%d B values", p.ValueBytes)},
		}[r.Sweep]
		parts = append(parts, "keys: "+keysText(p.Keys), "compression "+p.Compression)
		fmt.Fprintf(w, "Each point: %s. ", strings.Join(parts, ", "))
	}
	where := "in this process"
	if r.Isolated {
		where = "each in a process of its own"
	}
	fmt.Fprintf(w, "Scenarios %s side by side at every point, %s; medians of %d runs, order rotated each run. Broker: %s; %s, GOMAXPROCS %d, %d CPUs (%s).\n\n",
		strings.Join(r.Scenarios, ", "), where, r.Runs, r.Broker, r.Go, r.GOMAXPROCS, r.NumCPU, r.CPU)

	rows := [][]string{{r.Axis, "records", "scenario", "records/s", "MiB/s", "× raw", "range", "peak RSS", "wall", "runs ok"}}
	for _, p := range r.Points {
		for _, s := range p.Report.Scenarios {
			m := s.Median
			row := []string{p.Label, groupDigits(int64(p.Report.Params.Records)), s.Key}
			if s.OKRuns == 0 {
				row = append(row, "FAILED", "", "", "", "", "", fmt.Sprintf("0/%d", len(s.Runs)))
				rows = append(rows, row)
				continue
			}
			ratio, rng, rss := "n/a", "", "n/a"
			if m.Ratio > 0 {
				ratio = fmt.Sprintf("%.3f", m.Ratio)
				rng = fmt.Sprintf("%.2f–%.2f", m.RatioMin, m.RatioMax)
			}
			if m.PeakRSS > 0 {
				rss = bytesText(m.PeakRSS)
			}
			row = append(row, groupDigits(int64(m.RecordsPerSec)), fmt.Sprintf("%.1f", m.MBPerSec), ratio, rng, rss,
				fmt.Sprintf("%.1fs", m.WallSec), fmt.Sprintf("%d/%d", s.OKRuns, len(s.Runs)))
			rows = append(rows, row)
		}
	}
	printMarkdownTable(w, rows, 2) // the scenario column is text
	fmt.Fprintln(w)

	for _, key := range r.Scenarios {
		if key == rawKey {
			continue
		}
		var parts []string
		for _, p := range r.Points {
			v := "failed"
			if s := p.Report.scenario(key); s != nil && s.OKRuns > 0 {
				v = ratioText(s.Median.Ratio)
			}
			parts = append(parts, p.Label+": "+v)
		}
		fmt.Fprintf(w, "- %s ÷ %s by %s: %s\n", key, rawKey, r.Axis, strings.Join(parts, ", "))
	}
	for _, f := range r.RSS {
		verdict := "not measured"
		if f.Met != nil {
			verdict = "flat"
			if !*f.Met {
				verdict = "NOT flat"
			}
		}
		fmt.Fprintf(w, "- %s peak RSS, backlog %s ÷ %s: %s ÷ %s = %s (goal ≤ %.2f): %s\n",
			f.Scenario, f.To, f.From, bytesText(f.ToRSS), bytesText(f.FromRSS), ratioText(f.Ratio), f.Limit, verdict)
	}
	fmt.Fprintln(w, "- records/s from the client's first Fetch request to the last record; × raw: the scenario's rate ÷ the raw loop's in the same run (median, and the range over runs); peak RSS: median over runs of the consumer's peak resident set")
	for _, p := range r.Points {
		for _, s := range p.Report.Scenarios {
			for _, rr := range s.Runs {
				if !rr.OK {
					fmt.Fprintf(w, "- FAILED at %s, %s run %d: %s\n", p.Label, s.Key, rr.Run, rr.Error)
				}
			}
		}
		for _, n := range p.Report.Notes {
			fmt.Fprintf(w, "- note at %s: %s\n", p.Label, n)
		}
	}
}

// printMarkdownTable writes rows as a markdown table, padded so that it
// reads as well in a terminal: the first row is the header; the columns
// numbered in textCols are left-aligned, the others (numbers) right-aligned.
func printMarkdownTable(w io.Writer, rows [][]string, textCols ...int) {
	if len(rows) == 0 {
		return
	}
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)), 3)
		}
	}
	right := func(i int) bool { return !slices.Contains(textCols, i) }
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if right(i) {
				b.WriteString(" " + pad + c + " |")
			} else {
				b.WriteString(" " + c + pad + " |")
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(rows[0])
	sep := make([]string, len(rows[0]))
	for i := range sep {
		if right(i) {
			sep[i] = strings.Repeat("-", width[i]-1) + ":"
		} else {
			sep[i] = strings.Repeat("-", width[i])
		}
	}
	line(sep)
	for _, row := range rows[1:] {
		line(row)
	}
}

// writeFiles writes base.json, base.md and base.svg.
func (r *SweepReport) writeFiles(base string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", append(b, '\n'), 0o644); err != nil {
		return err
	}
	var md bytes.Buffer
	r.writeMarkdown(&md, true)
	if err := os.WriteFile(base+".md", md.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(base+".svg", r.chartSVG(), 0o644)
}
