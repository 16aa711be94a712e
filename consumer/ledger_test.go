package consumer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/internal/kafkatest"
)

// ledger records, across all members of a test group, every record handed to
// a handler, in the order the handlers saw them, per partition.
type ledger struct {
	mu       sync.Mutex
	seq      map[int32][]int64 // partition -> offsets in handling order
	distinct atomic.Int64
	seen     map[[2]int64]bool
}

func newLedger() *ledger {
	return &ledger{seq: map[int32][]int64{}, seen: map[[2]int64]bool{}}
}

func (l *ledger) add(b *Batch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range b.Records {
		l.seq[r.Partition] = append(l.seq[r.Partition], r.Offset)
		k := [2]int64{int64(r.Partition), r.Offset}
		if !l.seen[k] {
			l.seen[k] = true
			l.distinct.Add(1)
		}
	}
}

// check returns lost, duplicates and order violations against the end
// offsets (every offset below end was produced: no gaps).
func (l *ledger) check(end map[int32]int64) (lost, dups, disorder int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, e := range end {
		seen := map[int64]int{}
		prev := int64(-1)
		for _, o := range l.seq[p] {
			seen[o]++
			if o <= prev {
				disorder++
			}
			prev = o
		}
		for o := int64(0); o < e; o++ {
			switch n := seen[o]; {
			case n == 0:
				lost++
			case n > 1:
				dups += n - 1
			}
		}
	}
	return lost, dups, disorder
}

// waitUntil polls cond every 10ms until it holds or the deadline passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// member runs a consumer in the background; stop closes it and returns Run's error.
type member struct {
	c    *Consumer
	done chan error
}

func startMember(t *testing.T, cfg Config, h Handler) *member {
	t.Helper()
	c, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{c: c, done: make(chan error, 1)}
	go func() { m.done <- c.Run(context.Background()) }()
	t.Cleanup(func() { _ = m.stop() })
	return m
}

func (m *member) stop() error {
	_ = m.c.Close()
	select {
	case err := <-m.done:
		m.done <- err
		return err
	case <-time.After(60 * time.Second):
		return fmt.Errorf("member did not stop within 60s")
	}
}

// onePartition makes a one-partition topic holding n records written by
// produce, and a test config that reads it with a group of its own.
func onePartition(t *testing.T, n int, produce func(t *testing.T, brokers []string, topic string, n int)) ([]string, string, Config) {
	t.Helper()
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 1)
	produce(t, brokers, topic, n)
	return brokers, topic, baseConfig(t, topic, kafkatest.NewGroup(t))
}

// produce100 writes n records of 100-byte values.
func produce100(t *testing.T, brokers []string, topic string, n int) {
	kafkatest.Produce(t, brokers, topic, n, value100)
}

// embeddedTopics starts a kfake cluster of the test's own (for tests that
// inject broker errors) holding the topics, one partition each; it is closed
// when the test ends.
func embeddedTopics(t *testing.T, topics ...string) (*kfake.Cluster, []string) {
	t.Helper()
	cluster, err := kafkatest.NewEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	brokers := cluster.ListenAddrs()
	adm := kafkatest.Admin(t, brokers)
	for _, tp := range topics {
		if _, err := adm.CreateTopic(context.Background(), 1, 1, nil, tp); err != nil {
			t.Fatal(err)
		}
	}
	return cluster, brokers
}

// embeddedOnePartition is embeddedTopics with topic holding n records of
// 100-byte values.
func embeddedOnePartition(t *testing.T, topic string, n int) (*kfake.Cluster, []string) {
	t.Helper()
	cluster, brokers := embeddedTopics(t, topic)
	kafkatest.Produce(t, brokers, topic, n, value100)
	return cluster, brokers
}

// embeddedWithDeadLetter is embeddedTopics holding topic and topic.dlq.
func embeddedWithDeadLetter(t *testing.T, topic string) (*kfake.Cluster, []string) {
	t.Helper()
	return embeddedTopics(t, topic, topic+".dlq")
}

// refuseProduce answers every produce request with code while refusing
// reports true (always when it is nil).
func refuseProduce(cluster *kfake.Cluster, code *kerr.Error, refusing func() bool) {
	cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if refusing != nil && !refusing() {
			return nil, nil, false
		}
		r := req.(*kmsg.ProduceRequest)
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = code.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}
