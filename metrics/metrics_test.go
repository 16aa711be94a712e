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
	if n := testutil.CollectAndCount(col); n != 17 {
		t.Fatalf("collected %d metrics, want 17", n)
	}
	want := `
# HELP kbatch_records_total Records handled successfully.
# TYPE kbatch_records_total counter
kbatch_records_total{service="orders"} 0
# HELP kbatch_buffered_records Records held: fetched and not yet handled.
# TYPE kbatch_buffered_records gauge
kbatch_buffered_records{service="orders"} 0
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), "kbatch_records_total", "kbatch_buffered_records"); err != nil {
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
