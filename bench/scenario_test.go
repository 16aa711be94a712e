//go:build !memchild

package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// testData produces a small topic of its own on the shared broker.
func testData(t *testing.T, records, partitions int) (*broker, *dataset) {
	t.Helper()
	b := testBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var n atomic.Int64
	ds, err := prepareTopic(ctx, b.Addrs, uniqueName("bench-test"), produceSpec{
		Records: records, Partitions: partitions, ValueBytes: 20, Keys: 50, Replication: 1, Compression: "none",
	}, &n)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Records != int64(records) || len(ds.Spans) != partitions || n.Load() != int64(records) {
		t.Fatalf("topic holds %d records in %d partitions (%d acknowledged), want %d in %d", ds.Records, len(ds.Spans), n.Load(), records, partitions)
	}
	return b, ds
}

func testHarness(b *broker, ds *dataset, subset int64, stall time.Duration) *harness {
	return &harness{
		brokers:  b.Addrs,
		data:     ds,
		subset:   subsetSpans(ds.Spans, subset),
		work:     time.Millisecond,
		stall:    stall,
		closeMax: 30 * time.Second,
		progress: newProgress(io.Discard, true),
	}
}

// TestEveryScenarioReceivesEveryRecord runs each scenario of the table on a
// small topic and checks that the suite's own count agrees: every record
// once, and for the subset scenario exactly its subset. It guards the
// scenarios' stop conditions and the checker's wiring, not their speed.
func TestEveryScenarioReceivesEveryRecord(t *testing.T) {
	b, ds := testData(t, 6000, 4)
	h := testHarness(b, ds, 400, 20*time.Second)
	for _, sc := range scenarios() {
		t.Run(sc.Key, func(t *testing.T) {
			r := h.runOne(context.Background(), sc, 1, 1, sc.Key)
			if !r.OK {
				t.Fatalf("failed: %s (check %+v)", r.Error, r.Check)
			}
			want := ds.Records
			if sc.Subset {
				want = 400
			}
			if r.Records != want || r.Check.Want != want || r.Check.Got != want {
				t.Fatalf("records %d, check %+v; want %d", r.Records, r.Check, want)
			}
			if r.Check.Repeats != 0 {
				t.Errorf("%d repeated deliveries in a single-member group", r.Check.Repeats)
			}
			if r.RecordsPerSec <= 0 || r.Bytes <= 0 || r.AllocsPerRecord < 0 || r.PeakHeapInuse == 0 {
				t.Errorf("measures missing: %+v", r)
			}
			if r.Commits < 1 {
				t.Errorf("commits on the wire = %d, want at least the one on close", r.Commits)
			}
			if sc.Key == "franz-sync" && (r.OwnCommits != want || r.Commits < want) {
				t.Errorf("per-record commits: own %d wire %d, want %d each", r.OwnCommits, r.Commits, want)
			}
			if strings.HasPrefix(sc.Key, "kbatch") && (r.OwnCommits < 1 || r.Commits < r.OwnCommits) {
				t.Errorf("kbatch commits: Stats %d, wire %d", r.OwnCommits, r.Commits)
			}
		})
	}
}

// TestScenarioMissingRecordsIsReportedFailed guards the point of the
// checker: a client that silently loses records must fail, not report a
// good rate. The lossy loop reads everything but drops every tenth record.
func TestScenarioMissingRecordsIsReportedFailed(t *testing.T) {
	b, ds := testData(t, 2000, 2)
	h := testHarness(b, ds, 100, time.Second)
	lossy := Scenario{Key: "lossy", Name: "drops every tenth record", Run: func(ctx context.Context, env *Env) (Outcome, error) {
		cl, err := kgo.NewClient(franzOpts(env)...)
		if err != nil {
			return Outcome{OwnCommits: -1}, err
		}
		defer cl.Close()
		for ctx.Err() == nil {
			cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
				if r.Offset%10 != 0 {
					env.Check.MarkOne(r.Partition, r.Offset, len(r.Value))
				}
			})
		}
		return Outcome{OwnCommits: -1}, nil
	}}
	r := h.runOne(context.Background(), lossy, 1, 1, "lossy")
	if r.OK {
		t.Fatalf("a scenario missing records passed: %+v", r)
	}
	if r.Check.Got != 1800 || r.Check.Want != 2000 {
		t.Fatalf("check %+v, want 1800 of 2000", r.Check)
	}
	for _, want := range []string{"200 of 2000 records missing", "first at offset 0", "no progress for 1s"} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("error %q does not say %q", r.Error, want)
		}
	}
}

// TestScenarioErrorIsReportedFailed guards a client that gives up: its
// error is the verdict, with what was missing.
func TestScenarioErrorIsReportedFailed(t *testing.T) {
	b, ds := testData(t, 100, 1)
	h := testHarness(b, ds, 10, 5*time.Second)
	broken := Scenario{Key: "broken", Name: "fails at once", Run: func(context.Context, *Env) (Outcome, error) {
		return Outcome{OwnCommits: -1}, errors.New("cannot connect")
	}}
	r := h.runOne(context.Background(), broken, 1, 1, "broken")
	if r.OK || !strings.Contains(r.Error, "cannot connect") || !strings.Contains(r.Error, "100 of 100 records missing") {
		t.Fatalf("result %+v, want failed naming the error and the missing records", r)
	}
}

// TestKfakeChildServesAndStops guards the default broker: a child process
// of the same binary that serves kfake and exits when told.
func TestKfakeChildServesAndStops(t *testing.T) {
	b, err := startKfakeChild(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n atomic.Int64
	ds, err := prepareTopic(ctx, b.Addrs, "child-test", produceSpec{Records: 100, Partitions: 2, ValueBytes: 5, Replication: 1}, &n)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Records != 100 {
		t.Fatalf("records %d, want 100", ds.Records)
	}
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("closing the broker process: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("broker process did not stop")
	}
}
