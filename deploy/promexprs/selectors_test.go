package main

import (
	"slices"
	"testing"
)

// Guards the selector list the live check queries: a label name, a
// function, a duration or a string taken for a metric would be reported as
// a missing series; a selector missed would go unchecked.
func TestSelectorsFindTheSeriesAnExpressionReads(t *testing.T) {
	for _, tc := range []struct {
		name, expr string
		want       []string
	}{
		{"a bare metric", "kbatch_ready", []string{"kbatch_ready"}},
		{"label matchers are kept, strings in them are not metrics", `up{job="kbatch", instance=~"a.*|rate(x)"} == 0`, []string{`up{job="kbatch", instance=~"a.*|rate(x)"}`}},
		{"functions and ranges are skipped", "rate(kbatch_records_total[1m])", []string{"kbatch_records_total"}},
		{"grouping labels are not metrics", "sum by (topic, partition) (kbatch_partition_lag_records)", []string{"kbatch_partition_lag_records"}},
		{"grouping after the aggregation", "sum(rate(kbatch_flushes_total[5m])) by (reason)", []string{"kbatch_flushes_total"}},
		{"numbers and a quantile", "histogram_quantile(0.99, sum by (le) (rate(kbatch_handler_duration_seconds_bucket[5m]))) > 1e3", []string{"kbatch_handler_duration_seconds_bucket"}},
		{"binary operators and vector matching", "a_total / on (instance) group_left (service) b_info and c unless d or e offset 5m", []string{"a_total", "b_info", "c", "d", "e"}},
		{"subqueries", "deriv(sum by (job, topic) (kbatch_partition_lag_records)[15m:1m]) > 0", []string{"kbatch_partition_lag_records"}},
		{"a selector without a name", `count({__name__=~"kbatch_.+"})`, []string{`{__name__=~"kbatch_.+"}`}},
		{"vector() has none", "count(x > 300) or vector(0)", []string{"x"}},
		{"absent keeps its argument", `absent(up{job="kbatch"})`, []string{`up{job="kbatch"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := selectors(tc.expr); !slices.Equal(got, tc.want) {
				t.Errorf("selectors(%q) = %q, want %q", tc.expr, got, tc.want)
			}
		})
	}
}
