package kafkastore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/security"
)

// TestEveryClientUsesSecurity guards Options.Security: on a cluster that
// requires SASL, the store's producer and admin client (creating the
// changelog, claiming, writing) and the fetches of Assign (a second store
// loading what the first wrote) must all authenticate, or Assign fails.
func TestEveryClientUsesSecurity(t *testing.T) {
	const pw = "store-pw"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders"),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "store", pw))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close) // after the stores: they close before it
	opts := Options{Group: "billing", Security: security.Config{SASL: &security.SASL{Mechanism: security.ScramSHA256, User: "store", Password: pw}}}
	// Without Security a client never authenticates and retries until
	// its context ends: keep that short.
	ctx, cancel := context.WithTimeout(testContext(t), 30*time.Second)
	defer cancel()
	p := dedupe.Partition{Topic: "orders", Partition: 1}

	first := openStore(t, cluster.ListenAddrs(), opts)
	if err := first.Assign(ctx, p); err != nil {
		t.Fatalf("Assign: %v", err)
	}
	if _, err := first.Begin(ctx, p, []string{"k1"}); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if err := first.Done(ctx, p, []string{"k1"}); err != nil {
		t.Fatalf("Done: %v", err)
	}
	first.Release(p) // the partition moves: the Done lands before the next owner's claim

	second := openStore(t, cluster.ListenAddrs(), opts)
	if err := second.Assign(ctx, p); err != nil {
		t.Fatalf("Assign of a second store (loading through a reader): %v", err)
	}
	es, err := second.Lookup(ctx, p, []string{"k1"})
	if err != nil || !es[0].Done {
		t.Fatalf("Lookup after loading = %+v, %v: want k1 done", es, err)
	}
}

// TestNewRefusesInvalidSecurity guards the validation: a PLAIN config
// without TLS is refused by New, naming the field, without the password.
func TestNewRefusesInvalidSecurity(t *testing.T) {
	const pw = "pw-never-in-an-error"
	_, err := New(Options{Brokers: []string{"127.0.0.1:1"}, Group: "g",
		Security: security.Config{SASL: &security.SASL{Mechanism: security.Plain, User: "u", Password: pw}}})
	var oe *OptionsError
	if !errors.As(err, &oe) || oe.Field != "Security" || !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("New = %v, want an OptionsError for Security", err)
	}
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("error %q holds the password", err)
	}
}
