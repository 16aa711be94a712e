//go:build !memchild

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestParsePCLine(t *testing.T) {
	r, err := parsePCLine([]byte("[main] WARN something\nhandled=1000 span_ns=2000000000 order_violations=3\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Handled != 1000 || r.Span != 2*time.Second || r.Violations != 3 {
		t.Fatalf("parsed %+v", r)
	}
	if got := r.Rate(); got < 499 || got > 500 {
		t.Fatalf("rate %v, want 499.5", got)
	}
	for _, bad := range []string{"", "nothing here\n", "handled=x span_ns=1\n"} {
		if _, err := parsePCLine([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseConcurrency(t *testing.T) {
	got, err := parseConcurrency("1, 8,64")
	if err != nil || len(got) != 3 || got[0] != 1 || got[1] != 8 || got[2] != 64 {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "8,-1", "x"} {
		if _, err := parseConcurrency(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// The suite end to end on the embedded broker, small: every scenario
// handles records, the per-key ledger finds no violation, and the table
// names every row.
func TestOrderingSuiteRuns(t *testing.T) {
	o, err := parseFlags([]string{"-ordering", "-ordering-records", "200", "-ordering-keys", "10",
		"-ordering-work", "1ms", "-ordering-time", "1s", "-ordering-concurrency", "4", "-runs", "1", "-q",
		"-kfake-brokers", "1", "-out", t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep, err := runOrdering(context.Background(), o, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed {
		t.Fatalf("failed:\n%s", out.String())
	}
	for _, r := range rep.Rows {
		if r.Rate <= 0 || r.Violations != 0 {
			t.Errorf("%s: rate %v, violations %d", r.Label, r.Rate, r.Violations)
		}
		if !strings.Contains(out.String(), r.Label) {
			t.Errorf("table lacks %s:\n%s", r.Label, out.String())
		}
	}
}

func TestOrderingLedgerCountsKeysGoingBack(t *testing.T) {
	l := newOrderLedger(4)
	for _, off := range []int64{1, 3, 2, 5} {
		l.add(rec("k", off))
	}
	if r := l.result(); r.Handled != 4 || r.Violations != 1 {
		t.Fatalf("%+v, want 4 handled and 1 violation", r)
	}
}

func rec(key string, offset int64) *kgo.Record {
	return &kgo.Record{Key: []byte(key), Offset: offset}
}

func TestOrderingLedgerInTotalOrderCountsAnyOffsetGoingBack(t *testing.T) {
	l := newOrderLedger(3)
	l.total = true
	l.add(rec("a", 1))
	l.add(rec("b", 3))
	l.add(rec("c", 2))
	if r := l.result(); r.Violations != 1 {
		t.Fatalf("%+v, want 1 violation", r)
	}
}
