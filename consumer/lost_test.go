package consumer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/offsets"
)

// Guards invariant 4 on loss: when the broker says this member is gone
// (UNKNOWN_MEMBER_ID on its heartbeat), the handler's context is cancelled at
// once and the member sends no commit under its old identity afterwards, not
// even on close. It injects broker errors, so it runs on an embedded kfake
// cluster of its own.
func TestLostPartitionCancelsHandlerAndCommitsNothing(t *testing.T) {
	const topic = "lost"
	cluster, brokers := embeddedOnePartition(t, topic, 2000)

	var (
		mu           sync.Mutex
		lostMember   string
		lostGen      int32
		lostAt       time.Time
		staleCommits int
	)
	// Observe every commit: after the loss, none may carry the old member id.
	cluster.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		mu.Lock()
		if lostMember != "" && (r.MemberID == lostMember || r.Generation <= lostGen) {
			staleCommits++
		}
		mu.Unlock()
		return nil, nil, false
	})

	inHandler := make(chan struct{}, 1)
	var cancelled atomic.Bool
	var calls atomic.Int64
	cfg := Config{
		Brokers: brokers, Group: "lost-group", Topics: []string{topic},
		Batch: batcher.Policy{MaxRecords: 100},
		// Nothing commits on the window: three batches complete uncommitted
		// before the loss, and must stay uncommitted.
		Commit:     offsets.Policy{EveryRecords: 1 << 30, Interval: time.Hour},
		ClientOpts: []kgo.Opt{kgo.HeartbeatInterval(100 * time.Millisecond)},
	}
	m := startMember(t, cfg, func(ctx context.Context, b *Batch) error {
		if n := calls.Add(1); n != 4 {
			return nil
		}
		inHandler <- struct{}{}
		<-ctx.Done() // the first batch hangs until the partition is lost
		cancelled.Store(true)
		return ctx.Err()
	})
	<-inHandler
	member, gen := m.c.cl.GroupMetadata()

	mu.Lock()
	lostMember, lostGen = member, gen
	lostAt = time.Now()
	mu.Unlock()
	cluster.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.HeartbeatRequest)
		if r.MemberID != member {
			return nil, nil, false
		}
		cluster.KeepControl()
		resp := r.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp, nil, true
	})

	waitUntil(t, 20*time.Second, "the handler's context to be cancelled", cancelled.Load)
	t.Logf("handler cancelled %s after the loss was injected", time.Since(lostAt).Round(time.Millisecond))
	waitUntil(t, 20*time.Second, "the lost partition to be counted", func() bool { return m.c.Stats().PartitionsLost >= 1 })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if staleCommits != 0 {
		t.Fatalf("%d commits sent under the lost member %s or its generation %d", staleCommits, member, gen)
	}
}
