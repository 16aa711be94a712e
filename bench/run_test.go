//go:build !memchild

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// runSuite runs the suite with args and returns its report and table; a
// run that errs or fails ends the test.
func runSuite(t *testing.T, args ...string) (*Report, *bytes.Buffer) {
	t.Helper()
	o, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var table bytes.Buffer
	rep, err := run(ctx, o, &table)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed {
		t.Fatalf("run failed:\n%s", table.String())
	}
	return rep, &table
}

// TestRunWritesTableJSONAndChart runs the whole program on a small topic
// (broker in a child process, as with no flags) and checks its outputs: a
// table, results.json with every run of every chosen scenario in rotated
// order, and chart.svg.
func TestRunWritesTableJSONAndChart(t *testing.T) {
	out := t.TempDir()
	_, table := runSuite(t, "-records", "3000", "-partitions", "3", "-runs", "2", "-sync-records", "60",
		"-scenarios", "franz-raw,franz-sync,kbatch", "-stall", "20s", "-q", "-out", out, "-kfake-brokers", "1")
	for _, want := range []string{"franz-go poll loop", "kbatch, defaults", "franz-sync read 60 records per run", "targets"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Scenarios) != 3 {
		t.Fatalf("%d scenarios in the JSON, want 3", len(got.Scenarios))
	}
	firstOf := map[int]string{}
	for _, s := range got.Scenarios {
		if len(s.Runs) != 2 || s.OKRuns != 2 {
			t.Errorf("%s: %d runs, %d ok; want 2 and 2", s.Key, len(s.Runs), s.OKRuns)
		}
		for _, r := range s.Runs {
			if r.Order == 1 {
				firstOf[r.Run] = s.Key
			}
		}
	}
	if firstOf[1] != "franz-raw" || firstOf[2] != "franz-sync" {
		t.Errorf("first scenario of each run %v, want the order rotated by one", firstOf)
	}
	if raw := got.Scenarios[0]; raw.Key != rawKey || raw.Median.Ratio != 1 {
		t.Errorf("raw loop %s ratio %v, want 1", raw.Key, raw.Median.Ratio)
	}
	svg, err := os.ReadFile(filepath.Join(out, "chart.svg"))
	if err != nil || !bytes.HasPrefix(svg, []byte("<svg")) {
		t.Fatalf("chart.svg: %v %.40q", err, svg)
	}
}

// TestBatchRecordsReachesTheKbatchScenarios: -batch-records sets the batch
// bound of the kbatch scenarios, in their own processes too, and the report
// says so.
func TestBatchRecordsReachesTheKbatchScenarios(t *testing.T) {
	rep, _ := runSuite(t, "-records", "3000", "-partitions", "3", "-runs", "1",
		"-scenarios", "franz-raw,kbatch", "-batch-records", "100", "-q", "-out", t.TempDir(), "-kfake-brokers", "1")
	if rep.Params.BatchRecords != 100 {
		t.Errorf("params say batch records %d, want 100", rep.Params.BatchRecords)
	}
	i := slices.IndexFunc(rep.Scenarios, func(s ScenarioReport) bool { return s.Key == "kbatch" })
	if i < 0 || len(rep.Scenarios[i].Runs) != 1 {
		t.Fatalf("no run of kbatch in the report: %+v", rep.Scenarios)
	}
	// 1,000 records a partition: at least 10 batches each with a bound of
	// 100; kbatch's default bound (1,000) makes 1 to 3.
	if b := rep.Scenarios[i].Runs[0].ClientStats["batches"]; b < 30 {
		t.Errorf("kbatch made %d batches of 3,000 records, want at least 30 with -batch-records 100", b)
	}
}

// TestParseFlagsRefusesNonsense guards the flag checks.
func TestParseFlagsRefusesNonsense(t *testing.T) {
	for _, args := range [][]string{
		{"-records", "0"}, {"-partitions", "0"}, {"-runs", "0"}, {"-compression", "brotli"},
		{"-sync-records", "-1"}, {"stray"}, {"-keys", "-2"}, {"-batch-records", "-1"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.records != 2_000_000 || o.runs != 3 || o.brokers != "" || o.valueBytes != 100 {
		t.Errorf("defaults %+v", o)
	}
	if _, err := selectScenarios(scenarios(), "kbatch,nope"); err == nil {
		t.Error("unknown scenario accepted")
	}
}
