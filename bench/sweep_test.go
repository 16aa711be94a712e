//go:build !memchild

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSweepFlags guards the flag checks of the sweep and memory-check
// modes: combinations that cannot work are refused before any broker
// starts.
func TestSweepFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-sweep", "latency"},
		{"-sweep", "partitions,value-size", "-sweep-values", "8,16"},
		{"-sweep", "partitions", "-sweep-values", "8,zero"},
		{"-sweep", "value-size", "-sweep-values", "0"},
		{"-sweep", "partitions", "-topic", "t"},
		{"-sweep", "partitions", "-scenarios", "kbatch"},
		{"-sweep", "partitions", "-memcheck"},
		{"-memcheck", "-memcheck-backlogs", "1M,x"},
		{"-sweep-bytes", "0"},
		{"-memcheck-slack", "lots"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
	o, err := parseFlags([]string{"-sweep", "all"})
	if err != nil {
		t.Fatal(err)
	}
	if names, _ := parseSweepNames(o.sweep); strings.Join(names, ",") != "partitions,value-size,backlog" {
		t.Errorf("-sweep all = %v", names)
	}
	if o.sweepBytes != 200<<20 || o.memSlack != 32<<20 || o.memBacklogs != "1M,3M" || !o.isolate {
		t.Errorf("defaults %+v", o)
	}
	if _, err := parseFlags([]string{"-sweep", "value-size", "-sweep-values", "100,1KiB", "-sweep-bytes", "1MiB", "-scenarios", "franz-raw,kbatch-dedupe-mem"}); err != nil {
		t.Errorf("a valid value-size sweep refused: %v", err)
	}
}

// TestSweepPoints guards what each sweep varies: partitions only the
// partition count, value size the value and (scaled down, with a floor)
// the record count, backlog only the record count.
func TestSweepPoints(t *testing.T) {
	o, err := parseFlags([]string{"-records", "300000", "-partitions", "12", "-value-size", "50"})
	if err != nil {
		t.Fatal(err)
	}
	pts, labels, err := sweepPoints(o, "partitions")
	if err != nil {
		t.Fatal(err)
	}
	// Whole batches of 1000 records in every partition: 300,000 rounded
	// up to a multiple of partitions × 1000.
	if len(pts) != 4 || pts[0].Partitions != 8 || pts[3].Partitions != 1024 || pts[0].Records != 304_000 || pts[3].Records != 1_024_000 || pts[3].ValueBytes != 50 || labels[3] != "1,024" {
		t.Errorf("partitions points %+v %q", pts, labels)
	}

	pts, labels, err = sweepPoints(o, "value-size")
	if err != nil {
		t.Fatal(err)
	}
	// 100 B and 1 KiB: rounded up to whole batches of 1000 in each of 12
	// partitions; 10 KiB and 100 KiB batches are cut by bytes: as divided.
	wantRecords := []int{2_100_000, 216_000, 20_480, 2_048}
	for i, p := range pts {
		if p.Records != wantRecords[i] || p.Partitions != 12 {
			t.Errorf("value-size point %s: %d records in %d partitions, want %d in 12", labels[i], p.Records, p.Partitions, wantRecords[i])
		}
	}
	if labels[1] != "1 KiB" || pts[3].ValueBytes != 100<<10 {
		t.Errorf("value-size labels %q, last value %d", labels, pts[3].ValueBytes)
	}
	o.sweepBytes = 1 << 20
	pts, _, _ = sweepPoints(o, "value-size")
	if pts[3].Records != minSweepRecords {
		t.Errorf("100 KiB point with 1 MiB per point: %d records, want the floor %d", pts[3].Records, minSweepRecords)
	}

	o.sweepValues = "250k,1M"
	pts, labels, err = sweepPoints(o, "backlog")
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 2 || pts[0].Records != 250_000 || pts[1].Records != 1_000_000 || labels[0] != "250k" || pts[1].Partitions != 12 {
		t.Errorf("backlog points %+v %q", pts, labels)
	}
}

// pointReport is a summarized Report of one sweep point: the raw loop at
// rate 100 in every run, kbatch at the given rates, both with peak RSS.
func pointReport(records int, kbatchRates []float64, rawRSS, kbatchRSS uint64) *Report {
	raw := ScenarioReport{Key: rawKey, Name: "raw <loop>"}
	kb := ScenarioReport{Key: "kbatch", Name: "kbatch, defaults"}
	for i, rate := range kbatchRates {
		r := runAt(i+1, 100, true)
		r.PeakRSS = rawRSS
		raw.Runs = append(raw.Runs, r)
		k := runAt(i+1, rate, rate > 0)
		k.PeakRSS = kbatchRSS + uint64(i)<<20
		if rate == 0 {
			k.Error = "7 of 10 records missing"
		}
		kb.Runs = append(kb.Runs, k)
	}
	rep := &Report{Params: Params{Records: records, Partitions: 8, ValueBytes: 100, Runs: len(kbatchRates), Compression: "none"},
		Scenarios: []ScenarioReport{raw, kb}}
	rep.summarize()
	return rep
}

func testSweep() *SweepReport {
	r := &SweepReport{Sweep: "backlog", Axis: "backlog (records)", Command: "go -C bench run . -sweep backlog", Broker: "kfake", Runs: 3,
		Scenarios: []string{rawKey, "kbatch"}, Isolated: true}
	r.Points = []SweepPoint{
		{Value: 1_000_000, Label: "1M", Report: pointReport(1_000_000, []float64{90, 95, 99}, 40<<20, 100<<20)},
		{Value: 4_000_000, Label: "4M", Report: pointReport(4_000_000, []float64{80, 0, 90}, 41<<20, 300<<20)},
	}
	r.summarize()
	return r
}

// TestSweepSummaryComparesRSSAcrossBacklogs guards the backlog sweep's
// point: peak RSS at 4M over 1M, within 10% or reported NOT flat.
func TestSweepSummaryComparesRSSAcrossBacklogs(t *testing.T) {
	r := testSweep()
	if !r.Failed {
		t.Error("a sweep with a failed run is not marked failed")
	}
	if len(r.RSS) != 2 {
		t.Fatalf("rss comparisons %+v, want one per scenario", r.RSS)
	}
	raw, kb := r.RSS[0], r.RSS[1]
	if raw.Met == nil || !*raw.Met || raw.From != "1M" || raw.To != "4M" {
		t.Errorf("raw loop %+v, want flat", raw)
	}
	if kb.Met == nil || *kb.Met || kb.Ratio < 2.9 || kb.Ratio > 3.1 {
		t.Errorf("kbatch %+v, want about 3 and not flat", kb)
	}
	other := testSweep()
	other.Sweep = "partitions"
	other.summarize()
	if len(other.RSS) != 0 {
		t.Errorf("partitions sweep compared RSS: %+v", other.RSS)
	}
}

// TestSweepTableAndChart guards the sweep's outputs: a markdown table with
// a row per point and scenario, the ratio per point, the RSS verdict and
// the failures; a well-formed SVG naming every scenario and marking the
// failed point; and JSON that reads back.
func TestSweepTableAndChart(t *testing.T) {
	r := testSweep()
	var b bytes.Buffer
	r.printTable(&b)
	out := b.String()
	for _, want := range []string{
		"## kbatch bench sweep: backlog (records)",
		"| backlog (records) |",
		"| 1M | 1,000,000 | franz-raw ",
		"kbatch ÷ franz-raw by backlog (records): 1M: 0.950×, 4M: 0.850×",
		"kbatch peak RSS, backlog 4M ÷ 1M: 301.0 MiB ÷ 101.0 MiB = 2.980× (goal ≤ 1.10): NOT flat",
		"franz-raw peak RSS, backlog 4M ÷ 1M: 41.0 MiB ÷ 40.0 MiB = 1.025× (goal ≤ 1.10): flat",
		"FAILED at 4M, kbatch run 2: 7 of 10 records missing",
	} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, r.Command) {
		t.Error("stdout repeats the command line")
	}
	vs := testSweep()
	vs.Sweep, vs.Axis, vs.SweepBytes = "value-size", "value size", 200<<20
	vs.summarize()
	b.Reset()
	vs.printTable(&b)
	if !strings.Contains(b.String(), "about 200 MiB of values") || strings.Contains(b.String(), "flat") {
		t.Errorf("value-size heading:\n%s", b.String())
	}

	svg := r.chartSVG()
	wellFormed(t, svg)
	for _, want := range []string{">franz-raw<", ">kbatch<", "peak RSS", "goal 0.95", ">1M<", ">4M<"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("chart lacks %q", want)
		}
	}

	base := filepath.Join(t.TempDir(), "sweep-backlog")
	if err := r.writeFiles(base); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(base + ".md")
	if err != nil || !bytes.Contains(md, []byte("`"+r.Command+"`")) {
		t.Errorf("markdown file lacks the command: %v\n%s", err, md)
	}
	data, err := os.ReadFile(base + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var back SweepReport
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Points) != 2 || back.Points[1].Report.scenario("kbatch").OKRuns != 2 || len(back.RSS) != 2 {
		t.Errorf("JSON read back: %+v", back)
	}
}

// TestLineChartWithFailedSeries guards the chart's corner cases: a series
// with no value at all, one value only, and names that need escaping.
func TestLineChartWithFailedSeries(t *testing.T) {
	nan := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = math.NaN()
		}
		return v
	}
	svg := lineChartSVG("t <1>", []string{"s & s"}, "x", []string{"a", "b"}, []chartPanel{{
		Title:  "p",
		Format: func(v float64) string { return "v" },
		Series: []chartSeries{
			{Name: "all failed", Y: nan(2), Lo: nan(2), Hi: nan(2)},
			{Name: "one", Y: []float64{1, math.NaN()}, Lo: []float64{0.5, math.NaN()}, Hi: []float64{2, math.NaN()}},
		},
	}})
	wellFormed(t, svg)
	if bytes.Count(svg, []byte("✕")) != 3 {
		t.Errorf("want three failed markers:\n%s", svg)
	}
	for _, want := range []string{"t &lt;1&gt;", "s &amp; s"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

func wellFormed(t *testing.T, svg []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v\n%s", err, svg)
		}
	}
}

// TestRunSweepEndToEnd runs a tiny partitions sweep on a broker in a child
// process, each scenario in a process of its own, and checks the files it
// writes: every point ran every scenario and measured a peak RSS.
func TestRunSweepEndToEnd(t *testing.T) {
	out := t.TempDir()
	o, err := parseFlags([]string{"-sweep", "partitions", "-sweep-values", "2,5", "-records", "3000", "-runs", "2",
		"-stall", "20s", "-q", "-out", out, "-kfake-brokers", "1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var table bytes.Buffer
	reps, err := runSweeps(ctx, o, &table)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Failed {
		t.Fatalf("sweep failed:\n%s", table.String())
	}
	data, err := os.ReadFile(filepath.Join(out, "sweep-partitions.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got SweepReport
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Points) != 2 || got.Points[1].Report.Params.Partitions != 5 || strings.Join(got.Scenarios, ",") != "franz-raw,kbatch" {
		t.Fatalf("points %+v scenarios %v", got.Points, got.Scenarios)
	}
	for i, p := range got.Points {
		// 3000 records rounded up to whole batches of 1000 in each of 2
		// and 5 partitions.
		if want := []int{4000, 5000}[i]; p.Report.Params.Records != want {
			t.Errorf("point %s: %d records, want %d", p.Label, p.Report.Params.Records, want)
		}
		for _, s := range p.Report.Scenarios {
			for _, r := range s.Runs {
				if !r.OK || !r.Isolated || r.PeakRSS == 0 || r.Records != int64(p.Report.Params.Records) {
					t.Errorf("%s at %s run %d: ok %v isolated %v rss %d records %d", s.Key, p.Label, r.Run, r.OK, r.Isolated, r.PeakRSS, r.Records)
				}
			}
		}
	}
	for _, ext := range []string{".md", ".svg"} {
		if _, err := os.Stat(filepath.Join(out, "sweep-partitions"+ext)); err != nil {
			t.Error(err)
		}
	}
}
