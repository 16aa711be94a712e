package metrics

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kbatch/kbatch/consumer"
)

// Guards the exported names and labels: dashboards and alerts depend on
// them, so a rename must fail a test.
func TestCollectorExportsTheConsumerStats(t *testing.T) {
	c, err := consumer.New(consumer.Config{Brokers: []string{"127.0.0.1:1"}, Group: "g", Topics: []string{"t"}},
		func(context.Context, *consumer.Batch) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	col := NewCollector(c, prometheus.Labels{"service": "orders"})
	// 22 counters and gauges, kbatch_flushes_total once per reason,
	// kbatch_topic_records_total once per outcome of the one topic, ready,
	// live and 5 histograms; no partition series: it owns none.
	if n, want := testutil.CollectAndCount(col), 22+len(consumer.FlushReasons)+4+2+5; n != want {
		t.Fatalf("collected %d metrics, want %d", n, want)
	}
	want := `
# HELP kbatch_records_total Records handed to a handler that succeeded for them (not the skipped or dead-lettered ones).
# TYPE kbatch_records_total counter
kbatch_records_total{service="orders"} 0
# HELP kbatch_buffered_records Records held: fetched and not yet handled.
# TYPE kbatch_buffered_records gauge
kbatch_buffered_records{service="orders"} 0
`
	want += `
# HELP kbatch_flushes_total Batches cut, by reason: records, bytes, wait (MaxWait), buffer (the member's buffer was full), idle (MaxWait off and nothing arrived), revoke, close, ready (ByKey or Resequence: records ready and a goroutine free), caught_up (a partition reached the end of a backlog).
# TYPE kbatch_flushes_total counter
kbatch_flushes_total{reason="buffer",service="orders"} 0
kbatch_flushes_total{reason="bytes",service="orders"} 0
kbatch_flushes_total{reason="caught_up",service="orders"} 0
kbatch_flushes_total{reason="close",service="orders"} 0
kbatch_flushes_total{reason="idle",service="orders"} 0
kbatch_flushes_total{reason="ready",service="orders"} 0
kbatch_flushes_total{reason="records",service="orders"} 0
kbatch_flushes_total{reason="revoke",service="orders"} 0
kbatch_flushes_total{reason="wait",service="orders"} 0
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), "kbatch_records_total", "kbatch_buffered_records", "kbatch_flushes_total"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(col)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
