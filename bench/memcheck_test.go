//go:build !memchild

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// boundedReport is a summarized Report of the bounded consumer at one
// backlog, one run per peak RSS given.
func boundedReport(backlog int, rss ...uint64) *Report {
	s := ScenarioReport{Key: boundedKey, Name: "bounded"}
	for i, v := range rss {
		r := runAt(i+1, 1000, true)
		r.PeakRSS = v
		r.ClientStats = map[string]int64{"peak_buffered_records": 4000 + int64(i), "peak_buffered_bytes": 900_000}
		s.Runs = append(s.Runs, r)
	}
	rep := &Report{Params: Params{Records: backlog, Runs: len(rss)}, Scenarios: []ScenarioReport{s}}
	rep.summarize()
	return rep
}

// TestMemCheckVerdict guards the check's rule: every run of every backlog
// must stay within MaxBufferedBytes plus the constant; the median passing
// is not enough.
func TestMemCheckVerdict(t *testing.T) {
	limit := int64(40 << 20)
	ok := memPointOf(1_000_000, boundedReport(1_000_000, 30<<20, 31<<20, 32<<20), limit)
	if !ok.Met || ok.PeakRSSMedian != 31<<20 || ok.PeakRSSMax != 32<<20 || ok.PeakBufferedRecords != 4002 || ok.PeakBufferedBytes != 900_000 {
		t.Errorf("point within the limit: %+v", ok)
	}
	one := memPointOf(3_000_000, boundedReport(3_000_000, 30<<20, 41<<20, 32<<20), limit)
	if one.Met {
		t.Errorf("a point with one run over the limit met it: %+v", one)
	}
	r := &MemReport{Limit: limit, Slack: 32 << 20, MaxBufferedBytes: 8 << 20, MaxBufferedRecords: 5000, ValueBytes: 200,
		Compression: "snappy", Partitions: 8, RecordWait: "10µs", Runs: 3, Isolated: true, Command: "go -C bench run . -memcheck",
		Points: []MemPoint{ok, one}}
	r.summarize()
	if r.Met || r.Failed || r.Growth == nil || r.Growth.From != "1M" || r.Growth.To != "3M" {
		t.Fatalf("report %+v growth %+v", r, r.Growth)
	}
	var b bytes.Buffer
	r.printTable(&b)
	out := strings.Join(strings.Fields(b.String()), " ")
	for _, want := range []string{
		"Limit: MaxBufferedBytes 8 MiB + constant 32 MiB = 40 MiB.",
		"| 1M | 1,000,000 | 31.0 MiB | 32.0 MiB | 40 MiB | yes | 4,002 rec, 878.9 KiB |",
		"| 3M | 3,000,000 | 32.0 MiB | 41.0 MiB | 40 MiB | NO |",
		"verdict: NOT met",
		"peak RSS, backlog 3M ÷ 1M: 1.032×",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	r.Points = r.Points[:1]
	r.summarize()
	if !r.Met || r.Growth != nil {
		t.Errorf("one backlog within the limit: met %v growth %+v", r.Met, r.Growth)
	}
}

// TestRunMemCheckEndToEnd runs the memory check on two tiny backlogs and
// checks what it reports: the bounded consumer's peak RSS per backlog,
// taken from its own process, and kbatch's buffer peaks within its bound.
// It asserts no verdict: that is what the check measures.
func TestRunMemCheckEndToEnd(t *testing.T) {
	out := t.TempDir()
	o, err := parseFlags([]string{"-memcheck", "-memcheck-backlogs", "2000,6000", "-runs", "1", "-stall", "20s", "-q", "-out", out, "-kfake-brokers", "1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var table bytes.Buffer
	rep, err := runMemCheck(ctx, o, &table)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed || len(rep.Points) != 2 {
		t.Fatalf("memory check failed:\n%s", table.String())
	}
	for _, p := range rep.Points {
		if p.PeakRSSMax == 0 || p.OKRuns != 1 || p.PeakBufferedRecords < 1 || p.PeakBufferedRecords > boundedMaxRecords {
			t.Errorf("backlog %d: %+v", p.Backlog, p)
		}
		if pr := p.Report.Params; !pr.Compressible || pr.Compression != "snappy" || pr.ValueBytes != 200 {
			t.Errorf("backlog %d produced %+v, want 200 B compressible snappy", p.Backlog, pr)
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "memcheck.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back MemReport
	if err := json.Unmarshal(data, &back); err != nil || back.Limit != 40<<20 || len(back.Points) != 2 {
		t.Fatalf("memcheck.json: %v %+v", err, back)
	}
	if !strings.Contains(back.Consumer, "-tags memchild") {
		t.Errorf("the check measured %q, not the lean consumer program (notes: %q)", back.Consumer, back.Notes)
	}
	if !strings.Contains(table.String(), "peak RSS (max)") {
		t.Errorf("table:\n%s", table.String())
	}
}
