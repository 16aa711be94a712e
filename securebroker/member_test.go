package securebroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/dedupe/kafkastore"
	"github.com/kbatch/kbatch/security"
)

const (
	records    = 2000
	partitions = 4
	poisonEach = 250 // every 250th record fails permanently: 8 dead-lettered
)

// TestLeastPrivilegeMemberEndToEnd guards DESIGN §4d: a member holding only
// READ on its input and group, WRITE on a dead-letter topic that exists and
// READ/WRITE on a changelog that exists (the ACLs of kafka.sh --secure; no
// CREATE anywhere) consumes everything over SASL_SSL with the Kafka dedupe
// store, dead-letters the poison records, and commits to the end, under both
// group protocols. Among other things it guards the dead-letter writer
// looking its topic up before asking to create it: with ACLs, CreateTopics
// answers TOPIC_AUTHORIZATION_FAILED, not TOPIC_ALREADY_EXISTS, for a topic
// that exists.
func TestLeastPrivilegeMemberEndToEnd(t *testing.T) {
	b := secureBroker(t)
	for _, proto := range []consumer.Protocol{consumer.ProtocolClassic, consumer.ProtocolConsumer} {
		t.Run(proto.String(), func(t *testing.T) {
			t.Parallel()
			runMember(t, b, proto)
		})
	}
}

func runMember(t *testing.T, b broker, proto consumer.Protocol) {
	input := name(t, b.prefixInput)
	dlq := name(t, b.prefixDLQ)
	changelog := name(t, b.prefixLog)
	group := name(t, b.prefixGroup)
	b.createTopic(t, input, partitions, nil)
	b.createTopic(t, dlq, 1, nil)
	b.createTopic(t, changelog, partitions, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")})
	poison := func(i int) bool { return i%poisonEach == poisonEach-1 }
	b.produce(t, input, partitions, records, func(i int) string {
		if poison(i) {
			return fmt.Sprintf("poison-%d", i)
		}
		return fmt.Sprintf("v-%d", i)
	})
	wantPoison := records / poisonEach

	var logs logBuffer
	sec := b.member(t)
	store, err := kafkastore.New(kafkastore.Options{
		Brokers: b.brokers, Group: group, Security: sec, Logger: logs.logger(),
		TopicName: func(string) string { return changelog },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	var (
		mu      sync.Mutex
		handled = map[string]bool{}
		all     = make(chan struct{})
		once    sync.Once
	)
	c, err := consumer.New(consumer.Config{
		Brokers: b.brokers, Group: group, Topics: []string{input}, Protocol: proto,
		Batch:        batcher.Policy{MaxRecords: 100, MaxWait: 50 * time.Millisecond},
		Commit:       offsetsPolicy(),
		DrainTimeout: 5 * time.Second,
		Retry:        consumer.Retry{Initial: 50 * time.Millisecond, Max: time.Second},
		DeadLetter:   &consumer.DeadLetter{Topic: func(string) string { return dlq }},
		Dedupe:       &consumer.Dedupe{Store: store},
		Logger:       logs.logger(),
		Security:     sec,
	}, func(ctx context.Context, batch *consumer.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		for i, r := range batch.Records {
			if strings.HasPrefix(string(r.Value), "poison-") {
				return consumer.FailedAt(i, consumer.Permanent(errors.New("poison record")))
			}
			handled[string(r.Value)] = true
		}
		if len(handled) == records-wantPoison {
			once.Do(func() { close(all) })
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()

	// Done when every good record was handled and every poison one written
	// to the dead-letter topic.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadLettered := false
	for !deadLettered {
		select {
		case <-ctx.Done():
			mu.Lock()
			n := len(handled)
			mu.Unlock()
			c.Close()
			<-runErr
			t.Fatalf("not done within 45s: handled %d of %d good records; stats %+v\nwarnings and errors logged:\n%s",
				n, records-wantPoison, c.Stats(), logs.lines(8, "level=WARN", "level=ERROR"))
		case <-tick.C:
			select {
			case <-all:
				deadLettered = c.Stats().DeadLettered >= int64(wantPoison)
			default:
			}
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := c.Stats()
	if st.DeadLettered != int64(wantPoison) || st.CommitErrors != 0 || st.StoreErrors != 0 {
		t.Errorf("stats %+v: want %d dead-lettered, no commit or store errors", st, wantPoison)
	}

	// Commits landed: the group's offsets are the end of every partition.
	ends, got := b.endOffsets(t, input), b.committed(t, group, input)
	for p, end := range ends {
		if got[p] != end {
			t.Errorf("partition %d: committed %d, end %d (all committed: %v)", p, got[p], end, got)
		}
	}
	// The dead-letter topic holds exactly the poison records, with their source.
	dead := b.readAll(t, dlq)
	seen := map[string]bool{}
	for _, r := range dead {
		seen[string(r.Value)] = true
		if h := header(r.Headers, consumer.HeaderSourceTopic); h != input {
			t.Errorf("dead-lettered %s names source topic %q", r.Value, h)
		}
		if _, err := strconv.Atoi(header(r.Headers, consumer.HeaderSourceOffset)); err != nil {
			t.Errorf("dead-lettered %s has source offset %q", r.Value, header(r.Headers, consumer.HeaderSourceOffset))
		}
	}
	for i := range records {
		v := fmt.Sprintf("poison-%d", i)
		if poison(i) && !seen[v] {
			t.Errorf("%s is not in the dead-letter topic", v)
		}
	}
	if len(seen) != wantPoison {
		t.Errorf("dead-letter topic holds %d distinct records, want %d", len(seen), wantPoison)
	}
	// The store wrote its entries to the changelog as the member: at least
	// a Begin and a Done record for every batch handled (the store writes
	// one changelog record per call, not one per key).
	if n := len(b.readAll(t, changelog)); n < int(2*st.Batches) {
		t.Errorf("the changelog holds %d records, want at least two per batch (%d batches)", n, st.Batches)
	}
	// The store could check the changelog's cleanup policy (DESCRIBE_CONFIGS)
	// and nothing else was refused.
	if l := logs.lines(5, "kafkastore:", "AUTHORIZATION"); l != "" {
		t.Errorf("the store or the client logged:\n%s", l)
	}
	checkNoSecret(t, b, "logs", logs.String())
}

// TestTheBrokerEnforcesTheACLs guards the suite itself: if the broker let
// the member do what its ACLs do not grant (create a topic, read outside its
// prefixes), the end-to-end test would prove nothing about least privilege.
func TestTheBrokerEnforcesTheACLs(t *testing.T) {
	b := secureBroker(t)
	outside := name(t, "kbsec.other.")
	b.createTopic(t, outside, 1, nil)
	adm := kadm.NewClient(b.client(t, b.member(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	resp, err := adm.CreateTopic(ctx, 1, 1, nil, name(t, b.prefixInput))
	if err == nil {
		err = resp.Err
	}
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Errorf("the member creating a topic under its input prefix: %v, want TOPIC_AUTHORIZATION_FAILED (no CREATE)", err)
	}
	// kadm reports a topic the member may not describe as the call's error.
	md, err := adm.Metadata(ctx, outside)
	if err == nil {
		err = md.Topics[outside].Err
	}
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Errorf("the member describing %s outside its prefixes: %v, want TOPIC_AUTHORIZATION_FAILED", outside, err)
	}
}

// TestMechanismsOnTheRealBroker guards the mapping of each SASL mechanism
// the broker enables onto franz-go: the member logs in with SCRAM-SHA-512,
// SCRAM-SHA-256 and PLAIN (over TLS) and can describe its input topic.
func TestMechanismsOnTheRealBroker(t *testing.T) {
	b := secureBroker(t)
	input := name(t, b.prefixInput)
	b.createTopic(t, input, 1, nil)
	for _, m := range []security.Mechanism{security.ScramSHA512, security.ScramSHA256, security.Plain} {
		t.Run(string(m), func(t *testing.T) {
			sec := b.member(t)
			sec.SASL.Mechanism = m
			adm := kadm.NewClient(b.client(t, sec))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			md, err := adm.Metadata(ctx, input)
			if err != nil {
				t.Fatalf("metadata with %s: %v", m, err)
			}
			if td := md.Topics[input]; td.Err != nil || len(td.Partitions) != 1 {
				t.Fatalf("%s described as %+v", input, td)
			}
		})
	}
}

func header(hs []kgoHeader, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
