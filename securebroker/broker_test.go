package securebroker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/offsets"
	"github.com/kbatch/kbatch/security"
)

// broker is the secured broker's settings, from the environment that
// `scripts/kafka/kafka.sh --secure env` sets.
type broker struct {
	brokers                  []string
	caFile                   string
	adminUser, adminPassword string
	user, password           string // the least-privilege member
	prefixInput, prefixGroup string
	prefixDLQ, prefixLog     string
}

// secureBroker returns the broker's settings, or skips the test saying how
// to run it.
func secureBroker(t *testing.T) broker {
	t.Helper()
	get := func(k string) string { return os.Getenv("KBATCH_SECURE_" + k) }
	b := broker{
		caFile:    get("CA"),
		adminUser: get("ADMIN_USER"), adminPassword: get("ADMIN_PASSWORD"),
		user: get("MEMBER_USER"), password: get("MEMBER_PASSWORD"),
		prefixInput: get("PREFIX_INPUT"), prefixGroup: get("PREFIX_GROUP"),
		prefixDLQ: get("PREFIX_DLQ"), prefixLog: get("PREFIX_CHANGELOG"),
	}
	if s := get("BROKERS"); s != "" {
		b.brokers = strings.Split(s, ",")
	}
	if len(b.brokers) == 0 {
		t.Skip(`secured-broker suite skipped: run scripts/kafka/kafka.sh up --secure; eval "$(scripts/kafka/kafka.sh --secure env)" (or scripts/ci-secure.sh)`)
	}
	for name, v := range map[string]string{"CA": b.caFile, "ADMIN_USER": b.adminUser, "ADMIN_PASSWORD": b.adminPassword,
		"MEMBER_USER": b.user, "MEMBER_PASSWORD": b.password, "PREFIX_INPUT": b.prefixInput, "PREFIX_GROUP": b.prefixGroup,
		"PREFIX_DLQ": b.prefixDLQ, "PREFIX_CHANGELOG": b.prefixLog} {
		if v == "" {
			t.Fatalf("KBATCH_SECURE_BROKERS is set but KBATCH_SECURE_%s is not", name)
		}
	}
	return b
}

// secrets are the strings that must never be printed.
func (b broker) secrets() []string { return []string{b.adminPassword, b.password} }

// security is TLS trusting the broker's CA and SCRAM-SHA-512 as user.
func (b broker) security(t *testing.T, user, password string) security.Config {
	t.Helper()
	tc, err := security.TLSFiles(b.caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return security.Config{TLS: tc, SASL: &security.SASL{Mechanism: security.ScramSHA512, User: user, Password: security.Secret(password)}}
}

func (b broker) member(t *testing.T) security.Config { return b.security(t, b.user, b.password) }

// client returns a client closed when the test ends.
func (b broker) client(t *testing.T, sec security.Config, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	so, err := sec.Options()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(append(so, kgo.SeedBrokers(b.brokers...)), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func (b broker) admin(t *testing.T) *kadm.Client {
	return kadm.NewClient(b.client(t, b.security(t, b.adminUser, b.adminPassword)))
}

// name is prefix followed by a name unique to the test and the run.
func name(t *testing.T, prefix string) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	n := strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			return c
		}
		return '-'
	}, t.Name())
	if len(n) > 60 {
		n = n[len(n)-60:]
	}
	return prefix + n + "-" + hex.EncodeToString(r[:])
}

// createTopic creates topic as the admin, waits until every partition has a
// leader, and deletes it when the test ends.
func (b broker) createTopic(t *testing.T, topic string, partitions int, configs map[string]*string) {
	t.Helper()
	adm := b.admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, int32(partitions), 1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("creating %s as the admin: %v", topic, err)
	}
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			if td, ok := md.Topics[topic]; ok && td.Err == nil && len(td.Partitions) == partitions && led(td) {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s has no leaders within 30s (last error %v)", topic, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = b.admin(t).DeleteTopics(ctx, topic)
	})
}

func led(td kadm.TopicDetail) bool {
	for _, p := range td.Partitions {
		if p.Err != nil || p.Leader < 0 {
			return false
		}
	}
	return true
}

// produce writes n records as the admin (the member may not write its
// input), record i to partition i mod partitions with the Idempotency-Key
// "id-<i>" and the value value(i).
func (b broker) produce(t *testing.T, topic string, partitions, n int, value func(i int) string) {
	t.Helper()
	cl := b.client(t, b.security(t, b.adminUser, b.adminPassword), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	recs := make([]*kgo.Record, n)
	for i := range n {
		recs[i] = &kgo.Record{
			Partition: int32(i % partitions),
			Key:       fmt.Appendf(nil, "k%d", i),
			Value:     []byte(value(i)),
			Headers:   []kgo.RecordHeader{{Key: dedupe.DefaultHeader, Value: fmt.Appendf(nil, "id-%d", i)}},
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("producing to %s as the admin: %v", topic, err)
	}
}

// readAll returns every record of topic, read as the admin up to the end
// offsets of now.
func (b broker) readAll(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := b.admin(t).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl := b.client(t, b.security(t, b.adminUser, b.adminPassword), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("reading %s: %v (still missing %v)", topic, err, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return out
}

// committed returns the group's committed offsets on topic, read as the
// admin: partition -> offset; a partition without a commit is absent.
func (b broker) committed(t *testing.T, group, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := b.admin(t).FetchOffsets(ctx, group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		t.Fatalf("committed offsets of %s: %v", group, err)
	}
	out := map[int32]int64{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

// endOffsets returns topic's end offsets, read as the admin.
func (b broker) endOffsets(t *testing.T, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := b.admin(t).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// logBuffer is a concurrency-safe buffer behind a slog text handler.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// logger writes every record, Debug and up, to the buffer.
func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns up to n lines of the log holding one of the words.
func (l *logBuffer) lines(n int, words ...string) string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
		if len(out) == n {
			break
		}
	}
	return strings.Join(out, "\n")
}

type kgoHeader = kgo.RecordHeader

// offsetsPolicy commits often, so that a test sees commits without waiting
// for the 5s default.
func offsetsPolicy() offsets.Policy {
	return offsets.Policy{EveryRecords: 500, Interval: 200 * time.Millisecond}
}

// checkNoSecret fails the test if a password appears in what was printed.
func checkNoSecret(t *testing.T, b broker, what, text string) {
	t.Helper()
	for _, s := range b.secrets() {
		if strings.Contains(text, s) {
			i := strings.Index(text, s)
			t.Errorf("a password appears in the %s, near: %q", what, text[max(0, i-200):i])
		}
	}
}
