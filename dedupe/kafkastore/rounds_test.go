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
	s := openStore(t, c.ListenAddrs(), Options{Group: "billing"})
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
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
	s := openStore(t, c.ListenAddrs(), Options{Group: "billing"})
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
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
	s := openStore(t, c.ListenAddrs(), Options{Group: "billing"})
	if err := s.Assign(ctx, p); err != nil {
		t.Fatal(err)
	}
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
		s := openStore(t, c.ListenAddrs(), Options{Group: "billing"})
		if err := s.Assign(ctx, p); err != nil {
			t.Fatal(err)
		}
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

// TestStoreClientDoesNotLinger guards the Done rounds' latency: they are
// produced without ProduceSync, so a client lingering (kgo's default is
// 10ms) held each Done's records that long before sending them, and the
// next batch's Begin waited for them.
func TestStoreClientDoesNotLinger(t *testing.T) {
	s, err := New(Options{Brokers: []string{"127.0.0.1:1"}, Group: "g",
		ClientOpts: []kgo.Opt{kgo.ProducerLinger(50 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.cl.OptValue(kgo.ProducerLinger); got != time.Duration(0) {
		t.Fatalf("the store's client lingers %v, want 0", got)
	}
}
