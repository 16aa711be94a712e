package kafkastore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/dedupe"
)

// roundsCluster is a kfake cluster of its own (its requests are
// controlled by the test) with the input topic "orders".
func roundsCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// assignedStore opens a store on c (closed at the end of the test) and
// assigns it p.
func assignedStore(t *testing.T, ctx context.Context, c *kfake.Cluster, p dedupe.Partition, opts Options) *Store {
	t.Helper()
	s := openStore(t, c.ListenAddrs(), opts)
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	return s
}

// refuseNextProduce makes the cluster refuse the next produce request
// (POLICY_VIOLATION for every partition, nothing written), once; the
// channel is closed when it did.
func refuseNextProduce(c *kfake.Cluster) <-chan struct{} {
	refused := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.PolicyViolation.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		close(refused)
		return resp, nil, true
	})
	return refused
}

// roundsKeys are a batch's keys: fallback keys of the partition (a runs
// record) and a header key (a hashes record).
func roundsKeys(p dedupe.Partition) []string {
	return []string{dedupe.OffsetKey(p.Topic, p.Partition, 0), dedupe.OffsetKey(p.Topic, p.Partition, 1), "h1"}
}

// wantDoneAfterLoad opens another store on the cluster, which claims p
// and loads it from the changelog, and checks that keys are done there.
func wantDoneAfterLoad(t *testing.T, ctx context.Context, c *kfake.Cluster, p dedupe.Partition, keys []string) {
	t.Helper()
	s := assignedStore(t, ctx, c, p, Options{Group: "billing"})
	es, err := s.Lookup(ctx, p, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if !e.Done {
			t.Errorf("%q after a load: %+v, want done", keys[i], e)
		}
	}
}

// TestDoneReturnsBeforeItsRecordsAreAcknowledged guards the one round trip
// waited on per batch: Done returns while the broker has not answered its
// produce request, its keys are done in memory at once, and the next write
// of the partition waits for them, so that a load afterwards finds them
// done.
func TestDoneReturnsBeforeItsRecordsAreAcknowledged(t *testing.T) {
	c := roundsCluster(t)
	ctx := testContext(t)
	p := dedupe.Partition{Topic: "orders", Partition: 1}
	s := assignedStore(t, ctx, c, p, Options{Group: "billing"})
	keys := roundsKeys(p)
	if _, err := s.Begin(ctx, p, keys); err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})
	var held atomic.Bool
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if held.CompareAndSwap(false, true) {
			c.SleepControl(func() { <-release }) // the Done's produce request waits
		}
		return nil, nil, false
	})
	returned := make(chan error, 1)
	go func() { returned <- s.Done(ctx, p, keys) }()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatalf("Done: %v", err)
		}
	case <-time.After(20 * time.Second):
		close(release)
		t.Fatal("Done waited for the broker to acknowledge its records")
	}
	es, err := s.Lookup(ctx, p, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if !e.Done {
			t.Errorf("Lookup of %q right after Done: %+v, want done", keys[i], e)
		}
	}
	close(release)
	if _, err := s.Begin(ctx, p, []string{"next"}); err != nil {
		t.Fatalf("Begin after the Done: %v", err)
	}
	wantDoneAfterLoad(t, ctx, c, p, keys)
}

// TestFailedDoneIsReportedAndWrittenAgain guards against losing a Done
// whose records the broker refused after Done returned: the next write of
// the partition reports it (the consumer retries that call), and writes
// its records again, so that a load afterwards finds the keys done.
func TestFailedDoneIsReportedAndWrittenAgain(t *testing.T) {
	c := roundsCluster(t)
	ctx := testContext(t)
	p := dedupe.Partition{Topic: "orders", Partition: 0}
	s := assignedStore(t, ctx, c, p, Options{Group: "billing"})
	keys := roundsKeys(p)
	if _, err := s.Begin(ctx, p, keys); err != nil {
		t.Fatal(err)
	}

	refused := refuseNextProduce(c) // the Done's
	if err := s.Done(ctx, p, keys); err != nil {
		t.Fatalf("Done: %v", err)
	}
	<-refused
	_, err := s.Begin(ctx, p, []string{"next"})
	if !errors.Is(err, kerr.PolicyViolation) {
		t.Fatalf("Begin after a refused Done: %v, want the Done's error", err)
	}
	if _, err := s.Begin(ctx, p, []string{"next"}); err != nil {
		t.Fatalf("Begin retried: %v", err)
	}
	es, err := s.Lookup(ctx, p, append(keys, "next"))
	if err != nil {
		t.Fatal(err)
	}
	if es[3].Attempts != 1 {
		t.Errorf("next after a retried Begin: %+v, want attempts 1", es[3])
	}
	wantDoneAfterLoad(t, ctx, c, p, keys)
}

// TestCloseWritesDoneInFlight guards Close: it lets the Done rounds in
// flight land before it closes its client, which would fail them.
func TestCloseWritesDoneInFlight(t *testing.T) {
	c := roundsCluster(t)
	ctx := testContext(t)
	p := dedupe.Partition{Topic: "orders", Partition: 1}
	for _, release := range []bool{false, true} {
		s := assignedStore(t, ctx, c, p, Options{Group: "billing"})
		keys := roundsKeys(p)
		if release {
			keys = append(keys, "released")
		}
		if _, err := s.Begin(ctx, p, keys); err != nil {
			t.Fatal(err)
		}
		if err := s.Done(ctx, p, keys); err != nil {
			t.Fatal(err)
		}
		if release {
			s.Release(p)
		} else if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		wantDoneAfterLoad(t, ctx, c, p, keys)
	}
}

// TestDoneRidesWithTheNextBegin guards one produce request per batch: a
// Done's records linger in the client until the partition's next write,
// whose request carries them with its own (a broker serves a connection's
// requests one at a time: sent alone, they made the next Begin wait two
// round trips); a Done that no write follows is sent after DoneLinger.
func TestDoneRidesWithTheNextBegin(t *testing.T) {
	c := roundsCluster(t)
	ctx := testContext(t)
	p := dedupe.Partition{Topic: "orders", Partition: 1}
	s := openStore(t, c.ListenAddrs(), Options{Group: "billing", DoneLinger: 30 * time.Second})
	start := time.Now()
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the first claim took %v: it lingered", d)
	}
	keys := roundsKeys(p)
	if _, err := s.Begin(ctx, p, keys); err != nil {
		t.Fatal(err)
	}
	var requests, batches atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		requests.Add(1)
		for _, rt := range kr.(*kmsg.ProduceRequest).Topics {
			batches.Add(int32(len(rt.Partitions)))
		}
		return nil, nil, false
	})
	if err := s.Done(ctx, p, keys); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d produce requests sent for a Done within its linger, want 0", n)
	}
	if _, err := s.Begin(ctx, p, []string{"next"}); err != nil {
		t.Fatal(err)
	}
	if n, b := requests.Load(), batches.Load(); n != 1 || b != 1 {
		t.Fatalf("the Done and the next Begin took %d produce requests (%d partition batches), want 1", n, b)
	}
	wantDoneAfterLoad(t, ctx, c, p, keys)

	// Claims never linger: the first of a producer (flushed, the client
	// not knowing the topic yet) nor a later one (sent with ProduceSync).
	s.Release(p)
	start = time.Now()
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a second claim took %v: it lingered", d)
	}

	// Nothing follows: the Done is sent after the linger.
	q := dedupe.Partition{Topic: "orders", Partition: 0}
	s2 := assignedStore(t, ctx, c, q, Options{Group: "billing", DoneLinger: 20 * time.Millisecond})
	qkeys := roundsKeys(q)
	if _, err := s2.Begin(ctx, q, qkeys); err != nil {
		t.Fatal(err)
	}
	before := requests.Load()
	if err := s2.Done(ctx, q, qkeys); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for requests.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("a Done that no write followed was never sent")
		}
		time.Sleep(5 * time.Millisecond)
	}
	wantDoneAfterLoad(t, ctx, c, q, qkeys)
}

// TestStoreClientLingersDoneLinger guards the linger the Done records wait
// with: the store's, whatever ClientOpts say (a longer one would hold a
// Done that no write follows for that long); a negative DoneLinger sends
// them at once.
func TestStoreClientLingersDoneLinger(t *testing.T) {
	for _, tc := range []struct {
		opt, want time.Duration
	}{{0, DefaultDoneLinger}, {-1, 0}, {time.Millisecond, time.Millisecond}} {
		s, err := New(Options{Brokers: []string{"127.0.0.1:1"}, Group: "g", DoneLinger: tc.opt,
			ClientOpts: []kgo.Opt{kgo.ProducerLinger(50 * time.Millisecond)}})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.cl.OptValue(kgo.ProducerLinger); got != tc.want {
			t.Errorf("DoneLinger %v: the store's client lingers %v, want %v", tc.opt, got, tc.want)
		}
		s.Close()
	}
}
