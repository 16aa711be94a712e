package consumer

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Guards the per-record log lines: one WARN per dead-lettered record (514
// lines for 514 records) drowned a service's log. A repeated line is logged
// once per partition per sampleEvery, then with a count of those left out.
func TestRepeatedLinesAreSampledWithACount(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, nil))
	var s sampler
	for range 514 {
		s.log(l, slog.LevelWarn, "dlq t/0", "kbatch: record dead-lettered", "partition", "t/0")
	}
	s.log(l, slog.LevelWarn, "dlq t/1", "kbatch: record dead-lettered", "partition", "t/1")
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines for 515 records on 2 partitions, want 2:\n%s", n, buf.String())
	}
	s.mu.Lock()
	e := s.last["dlq t/0"]
	e.at = e.at.Add(-sampleEvery - time.Second) // the window has passed
	s.last["dlq t/0"] = e
	s.mu.Unlock()
	s.log(l, slog.LevelWarn, "dlq t/0", "kbatch: record dead-lettered", "partition", "t/0")
	if !strings.Contains(buf.String(), "left_out=513") {
		t.Fatalf("the next line does not count the 513 left out:\n%s", buf.String())
	}
}

// Guards ClientLogLevel: franz-go's INFO lines (about twenty at start) stay
// out of a service's log at the default, and come through when asked for.
func TestClientLinesBelowClientLogLevelAreDropped(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	k := kgoLogger{l: l, min: slog.LevelWarn}
	k.Log(kgo.LogLevelInfo, "connection opened")
	k.Log(kgo.LogLevelWarn, "unable to open connection")
	if got := buf.String(); strings.Contains(got, "connection opened") || !strings.Contains(got, "unable to open connection") {
		t.Fatalf("at ClientLogLevel warn got:\n%s", got)
	}
	if k.Level() != kgo.LogLevelWarn {
		t.Fatalf("kgo asked for level %v, want warn", k.Level())
	}
	k.min = slog.LevelDebug
	k.Log(kgo.LogLevelInfo, "connection opened")
	if !strings.Contains(buf.String(), "connection opened") {
		t.Fatal("INFO line dropped at ClientLogLevel debug")
	}
}
