//go:build !memchild

package main

import (
	"strings"
	"testing"
	"time"
)

// consumerPerfOutput is what Kafka 4.3.1's ConsumerPerformance printed for
// 100,000 records in this repository's bench run.
const consumerPerfOutput = `start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-11-23 19:12:22:111, 2026-11-23 19:12:23:080, 10.3845, 10.7167, 100000, 103199.1744, 520, 449, 23.1280, 222717.1492
`

// TestParseConsumerPerfReadsTheFetchRate guards the Java reference's row:
// its rate is the fetch rate (group join left out, like ours), not the
// overall one.
func TestParseConsumerPerfReadsTheFetchRate(t *testing.T) {
	r, err := parseConsumerPerf("some warning line\n" + consumerPerfOutput)
	if err != nil {
		t.Fatal(err)
	}
	if r.Records != 100000 || r.RecordsPerSec != 222717.1492 || r.MBPerSec != 23.1280 || r.Elapsed != 449*time.Millisecond {
		t.Fatalf("parsed %+v", r)
	}
	if !strings.HasPrefix(r.Raw, "start.time") {
		t.Errorf("Raw = %q, want the summary", r.Raw)
	}
}

// TestParseConsumerPerfRefusesOutputWithoutSummary guards against a
// reference row made of zeros when the tool failed.
func TestParseConsumerPerfRefusesOutputWithoutSummary(t *testing.T) {
	for name, out := range map[string]string{
		"no summary":       "WARNING: Exiting before consuming the expected number of records: timeout (30000 ms) exceeded.\n",
		"values truncated": "start.time, end.time, data.consumed.in.nMsg\n2026-11-23 19:12:22:111, 1\n",
		"field missing":    "start.time, end.time\n2026-11-23 19:12:22:111, 2026-11-23 19:12:23:080\n",
	} {
		if r, err := parseConsumerPerf(out); err == nil {
			t.Errorf("%s: parsed %+v, want an error", name, r)
		}
	}
}
