package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLogger passes franz-go's logs to the consumer's slog.Logger, those at
// or above min only (Config.ClientLogLevel): the client's own chatter (about
// twenty INFO lines at start) stays out of a service's logs unless asked
// for.
type kgoLogger struct {
	l   *slog.Logger
	min slog.Level
}

func (k kgoLogger) Level() kgo.LogLevel {
	ctx := context.Background()
	enabled := func(l slog.Level) bool { return l >= k.min && k.l.Enabled(ctx, l) }
	switch {
	case enabled(slog.LevelDebug):
		return kgo.LogLevelDebug
	case enabled(slog.LevelInfo):
		return kgo.LogLevelInfo
	case enabled(slog.LevelWarn):
		return kgo.LogLevelWarn
	case enabled(slog.LevelError):
		return kgo.LogLevelError
	}
	return kgo.LogLevelNone
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var l slog.Level
	switch level {
	case kgo.LogLevelError:
		l = slog.LevelError
	case kgo.LogLevelWarn:
		l = slog.LevelWarn
	case kgo.LogLevelInfo:
		l = slog.LevelInfo
	default:
		l = slog.LevelDebug
	}
	if l < k.min {
		return
	}
	k.l.Log(context.Background(), l, "kgo: "+msg, keyvals...)
}

// sampleEvery is how often a repeated per-record or per-retry line is logged
// for one partition.
const sampleEvery = 10 * time.Second

// sampler thins out lines that can repeat once per record or per retry (a
// dead-lettered record, a failing batch): for each key (message and
// partition) the first line is logged, then at most one per sampleEvery,
// which says how many were left out since.
type sampler struct {
	mu   sync.Mutex
	last map[string]sampled
}

type sampled struct {
	at      time.Time
	dropped int
}

// log logs msg at level with args unless a line of the same key was logged
// less than sampleEvery ago.
func (s *sampler) log(l *slog.Logger, level slog.Level, key, msg string, args ...any) {
	now := time.Now()
	s.mu.Lock()
	if s.last == nil {
		s.last = make(map[string]sampled)
	}
	prev, seen := s.last[key]
	if seen && now.Sub(prev.at) < sampleEvery {
		prev.dropped++
		s.last[key] = prev
		s.mu.Unlock()
		return
	}
	if len(s.last) > 10000 {
		clear(s.last)
	}
	s.last[key] = sampled{at: now}
	s.mu.Unlock()
	if prev.dropped > 0 {
		args = append(args, "left_out", prev.dropped, "left_out_since", prev.at.Format(time.RFC3339))
		msg = fmt.Sprintf("%s (and %d more like it since the last such line)", msg, prev.dropped)
	}
	l.Log(context.Background(), level, msg, args...)
}
