//go:build !memchild

package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
)

func runAt(runIdx int, rate float64, ok bool) RunResult {
	return RunResult{Run: runIdx, OK: ok, RecordsPerSec: rate, Commits: 1, OwnCommits: -1}
}

func testReport() *Report {
	return &Report{
		Broker: "kfake",
		Params: Params{Records: 1000, Partitions: 2, ValueBytes: 10, Runs: 3, Compression: "none"},
		Scenarios: []ScenarioReport{
			{Key: rawKey, Name: "raw", Runs: []RunResult{runAt(1, 100, true), runAt(2, 200, true), runAt(3, 50, true)}},
			// Run 2 is slow for everyone: per-run ratios cancel that out.
			{Key: "kbatch", Name: "kbatch", Runs: []RunResult{runAt(1, 90, true), runAt(2, 190, true), runAt(3, 48, true)}},
			{Key: "sarama", Name: "sarama", Runs: []RunResult{runAt(1, 10, true), runAt(2, 0, false), runAt(3, 5, true)}},
			{Key: "kafka-go", Name: "kafka-go <&>", Runs: []RunResult{runAt(1, 0, false)}},
		},
	}
}

// TestSummarizeTakesRatiosRunByRun guards the measurement rule of DESIGN §6:
// a ratio is taken against the raw loop of the same run, and failed runs
// count in no median.
func TestSummarizeTakesRatiosRunByRun(t *testing.T) {
	r := testReport()
	r.summarize()
	kb := r.scenario("kbatch").Median
	if math.Abs(kb.Ratio-0.95) > 1e-9 || math.Abs(kb.RatioMin-0.9) > 1e-9 || math.Abs(kb.RatioMax-0.96) > 1e-9 {
		t.Errorf("kbatch ratio %v (%v–%v), want 0.95 (0.9–0.96)", kb.Ratio, kb.RatioMin, kb.RatioMax)
	}
	if kb.RecordsPerSec != 90 {
		t.Errorf("kbatch median rate %v, want 90", kb.RecordsPerSec)
	}
	s := r.scenario("sarama")
	if s.OKRuns != 2 || s.Median.RecordsPerSec != 7.5 {
		t.Errorf("sarama: %d ok runs, median %v; want 2 and 7.5 (the failed run left out)", s.OKRuns, s.Median.RecordsPerSec)
	}
	if !r.Failed {
		t.Error("report not marked failed although runs failed")
	}
	if r.Targets[0].Met == nil || !*r.Targets[0].Met || math.Abs(r.Targets[0].Value-0.95) > 1e-9 {
		t.Errorf("raw-loop target %+v, want 0.95 and met", r.Targets[0])
	}
	if r.Targets[1].Met != nil {
		t.Errorf("kafka-go target %+v, want unmeasured (no successful run)", r.Targets[1])
	}
	if r.Targets[2].Met == nil || *r.Targets[2].Met == false || math.Abs(r.Targets[2].Value-9.3) > 1e-9 {
		t.Errorf("sarama target %+v, want 9.3 and met", r.Targets[2])
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestTableAndChartShowFailures guards the output: a scenario with no good
// run shows as FAILED, and the chart is well-formed SVG even with names
// that need escaping.
func TestTableAndChartShowFailures(t *testing.T) {
	r := testReport()
	r.Scenarios[3].Runs[0].Error = "12 of 1000 records missing"
	r.summarize()
	var b bytes.Buffer
	r.printTable(&b)
	out := b.String()
	for _, want := range []string{"FAILED", "FAILED kafka-go run 1: 12 of 1000 records missing", "0.950", "not measured"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	svg := r.chartSVG()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v\n%s", err, svg)
		}
	}
	if !bytes.Contains(svg, []byte("kafka-go &lt;&amp;&gt;")) || !bytes.Contains(svg, []byte("failed")) {
		t.Errorf("chart lacks the escaped name or the failure:\n%s", svg)
	}
}

func TestGroupDigits(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 2000000: "2,000,000", -1234: "-1,234"} {
		if got := groupDigits(n); got != want {
			t.Errorf("groupDigits(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestDedupeTargetsAreRatiosToKbatch guards the dedupe goals of issue 9: a
// store's cost is its scenario's rate against kbatch without a store in the
// same run, not against the raw loop.
func TestDedupeTargetsAreRatiosToKbatch(t *testing.T) {
	r := testReport()
	r.Scenarios = append(r.Scenarios,
		ScenarioReport{Key: "kbatch-dedupe-mem", Name: "mem", Runs: []RunResult{runAt(1, 81, true), runAt(2, 152, true), runAt(3, 24, true)}},
		ScenarioReport{Key: "kbatch-dedupe-kafka", Name: "kafka", Runs: []RunResult{runAt(1, 45, true), runAt(2, 95, true), runAt(3, 24, true)}},
	)
	r.summarize()
	find := func(what string) Target {
		for _, tg := range r.Targets {
			if tg.What == what {
				return tg
			}
		}
		t.Fatalf("no target %q in %+v", what, r.Targets)
		return Target{}
	}
	// mem ÷ kbatch per run: 0.9, 0.8, 0.5 -> median 0.8, under 0.85.
	if mem := find("memory dedupe store ÷ kbatch"); mem.Met == nil || *mem.Met || math.Abs(mem.Value-0.8) > 1e-9 {
		t.Errorf("memory store target %+v, want 0.8 and not met", mem)
	}
	// kafka ÷ kbatch per run: 0.5, 0.5, 0.5 -> 0.5, under 0.6.
	if k := find("Kafka dedupe store ÷ kbatch"); k.Met == nil || *k.Met || math.Abs(k.Value-0.5) > 1e-9 {
		t.Errorf("Kafka store target %+v, want 0.5 and not met", k)
	}
}
