package securebroker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/dedupe/kafkastore"
	"github.com/kbatch/kbatch/metrics"
)

// TestNoSecretInLogsErrorsOrMetrics guards DESIGN §4d's "secrets never
// reach a log line, an error string or a label": across a secured run with
// the Kafka dedupe store (every log at Debug, franz-go's included), a run
// and a store Assign with a wrong password (their errors and logs), the
// Prometheus collector's output and the printed Config and Stats, neither
// password appears.
func TestNoSecretInLogsErrorsOrMetrics(t *testing.T) {
	b := secureBroker(t)
	const n = 300
	input := name(t, b.prefixInput)
	changelog := name(t, b.prefixLog)
	group := name(t, b.prefixGroup)
	b.createTopic(t, input, 2, nil)
	b.createTopic(t, changelog, 2, map[string]*string{"cleanup.policy": ptr("compact")})
	b.produce(t, input, 2, n, func(i int) string { return fmt.Sprintf("v-%d", i) })

	var logs logBuffer
	var printed strings.Builder
	sec := b.member(t)
	store, err := kafkastore.New(kafkastore.Options{Brokers: b.brokers, Group: group, Security: sec, Logger: logs.logger(),
		TopicName: func(string) string { return changelog }})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := consumer.Config{
		Brokers: b.brokers, Group: group, Topics: []string{input},
		Batch:  batcher.Policy{MaxRecords: 50, MaxWait: 20 * time.Millisecond},
		Commit: offsetsPolicy(),
		Dedupe: &consumer.Dedupe{Store: store},
		Logger: logs.logger(), Security: sec,
		// franz-go's own lines too, down to its connection and SASL debug.
		ClientLogLevel: &debugLevel,
	}
	fmt.Fprintf(&printed, "%v\n%+v\n%#v\n%s\n", cfg, cfg, cfg, cfg.Security)

	var mu sync.Mutex
	seen := 0
	done := make(chan struct{})
	c, err := consumer.New(cfg, func(ctx context.Context, batch *consumer.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		if seen += len(batch.Records); seen == n {
			close(done)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCollector(c, prometheus.Labels{"service": "secured"}))
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Errorf("the secured run handled %d of %d records within 45s", seen, n)
	}
	gather(t, reg, &printed)
	c.Close()
	if err := <-runErr; err != nil {
		fmt.Fprintf(&printed, "run error: %v\n", err)
	}
	gather(t, reg, &printed)
	fmt.Fprintf(&printed, "%+v\n%+v\n", c.Stats(), store.Stats())

	// A wrong password: the member's run and a store's Assign.
	bad := b.security(t, b.user, b.password+"x")
	wrong := cfg
	wrong.Security, wrong.Dedupe, wrong.Group = bad, nil, name(t, b.prefixGroup)
	cw, err := consumer.New(wrong, func(context.Context, *consumer.Batch) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer wcancel()
	if err := cw.Run(wctx); err != nil {
		fmt.Fprintf(&printed, "run error: %v\n", err)
	}
	bs, err := kafkastore.New(kafkastore.Options{Brokers: b.brokers, Group: wrong.Group, Security: bad, Logger: logs.logger(),
		TopicName: func(string) string { return changelog }})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer acancel()
	if err := bs.Assign(actx, dedupe.Partition{Topic: input, Partition: 0}); err != nil {
		fmt.Fprintf(&printed, "assign error: %v\n", err)
	}
	bs.Close()

	all := logs.String()
	// The capture must have seen the authentication, or it proves nothing.
	for _, want := range []string{"level=DEBUG", "sasl", "SASL_AUTHENTICATION_FAILED", "kbatch_records_total"} {
		if !strings.Contains(all+printed.String(), want) {
			t.Errorf("the captured output has no %q: the capture missed what it is meant to check", want)
		}
	}
	checkNoSecret(t, b, "logs", all)
	checkNoSecret(t, b, "printed config, stats, errors and metrics", printed.String())
}

func ptr(s string) *string { return &s }

// gather writes every metric of reg, labels and values, to w.
func gather(t *testing.T, reg *prometheus.Registry, w *strings.Builder) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		fmt.Fprintln(w, mf.String())
	}
}

var debugLevel = slog.LevelDebug
