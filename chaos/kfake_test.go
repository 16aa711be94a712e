package chaos

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/internal/kafkatest"
)

// TestEmbeddedBrokerRestartsTheRebalanceDeadlineAtEveryJoin pins down the
// half of the embedded broker's (kfake's) behaviour that the chaos driver
// works around on kfake (see killable) and that can be shown
// deterministically: a classic rebalance that waits for a member ends only
// when no JoinGroup has come for a whole rebalance timeout, because kfake
// restarts the deadline at each join. Kafka ends it at the rebalance timeout
// whoever joins meanwhile, and removes the members that did not join.
//
// The other half: a member that dies while its first JoinGroup as a new
// member waits in the barrier is counted as joined, and when the barrier
// completes kfake writes its answer or gives up on its dead connection at
// random (a select on two ready channels); when it gives up, it arms no
// session timer, and the dead member stays for ever, waiting to be joined. Then the group can only
// complete a rebalance by the deadline above, and the live members keep
// restarting it: kgo's JoinGroup times out after the rebalance timeout plus
// 10 s and is sent again, and a member that waited in the barrier longer
// than its session is removed, which restarts it too. The key-lanes chaos
// variant met this twice in CI (every join unanswered for minutes).
//
// It fails once kfake no longer behaves so; the workaround can then go.
func TestEmbeddedBrokerRestartsTheRebalanceDeadlineAtEveryJoin(t *testing.T) {
	if kafkatest.IsReal() {
		t.Skip("a property of the embedded broker")
	}
	c, err := kafkatest.NewEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	group := kafkatest.Name(t, "g")
	const (
		rebalance = 3 * time.Second
		session   = 6 * time.Second        // the broker's least
		every     = 300 * time.Millisecond // E's joins, well within the deadline on a loaded machine
		hold      = 4 * rebalance          // how long E keeps joining
	)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	client := func() *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RequestTimeoutOverhead(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	join := func(cl *kgo.Client, member string) (*kmsg.JoinGroupResponse, error) {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group = group
		req.MemberID = member
		req.SessionTimeoutMillis = int32(session / time.Millisecond)
		req.RebalanceTimeoutMillis = int32(rebalance / time.Millisecond)
		req.ProtocolType = "consumer"
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name = "raw"
		req.Protocols = append(req.Protocols, p)
		return req.RequestWith(ctx, cl)
	}
	// memberID makes a member's first join, which the broker answers with
	// MEMBER_ID_REQUIRED and the id to join with.
	memberID := func(cl *kgo.Client) string {
		resp, err := join(cl, "")
		if err != nil || resp.ErrorCode != kerr.MemberIDRequired.Code {
			t.Fatalf("first join: %v %+v", err, resp)
		}
		return resp.MemberID
	}
	describe := func(cl *kgo.Client) (state string, members []string) {
		req := kmsg.NewPtrDescribeGroupsRequest()
		req.Groups = []string{group}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || len(resp.Groups) != 1 {
			t.Fatalf("describing the group: %v", err)
		}
		for _, m := range resp.Groups[0].Members {
			members = append(members, m.MemberID)
		}
		return resp.Groups[0].State, members
	}
	admin := client()

	// E's joins go out on connections made beforehand (a join waiting in
	// the barrier holds back every later answer on its connection), so
	// that each reaches the broker at once.
	pool := make([]*kgo.Client, int(hold/every)+1)
	for i := range pool {
		pool[i] = client()
		describe(pool[i])
	}

	// D makes the group, leads it and syncs: the group is stable.
	clD := client()
	idD := memberID(clD)
	resp, err := join(clD, idD)
	if err != nil || resp.ErrorCode != 0 {
		t.Fatalf("D's join: %v %+v", err, resp)
	}
	sreq := kmsg.NewPtrSyncGroupRequest()
	sreq.Group, sreq.MemberID, sreq.Generation = group, idD, resp.Generation
	sreq.ProtocolType, sreq.Protocol = kmsg.StringPtr("consumer"), resp.Protocol
	if sresp, err := sreq.RequestWith(ctx, clD); err != nil || sresp.ErrorCode != 0 {
		t.Fatalf("D's sync: %v %+v", err, sresp)
	}

	// E joins: a rebalance begins, and waits for D, which heartbeats (so
	// its session holds) but does not join again. E joins again and again.
	heartbeat := func() int16 {
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID, req.Generation = group, idD, resp.Generation
		hresp, err := req.RequestWith(ctx, clD)
		if err != nil {
			t.Fatalf("D's heartbeat: %v", err)
		}
		return hresp.ErrorCode
	}
	idE := memberID(pool[0])
	start := time.Now()
	var gap time.Duration
	last := start
	for i, cl := range pool {
		go func() { _, _ = join(cl, idE) }()
		if i%3 == 0 {
			heartbeat()
		}
		time.Sleep(every)
		gap = max(gap, time.Since(last))
		last = time.Now()
	}
	if gap >= rebalance {
		t.Skipf("E's joins came up to %s apart, not within the %s deadline: this machine was too slow to tell", gap, rebalance)
	}
	state, members := describe(admin)
	if state != "PreparingRebalance" || !slices.Contains(members, idD) {
		t.Fatalf("the embedded broker ended the rebalance at its deadline (state %s, members %v, D %s, joins at most %s apart): "+
			"kfake no longer restarts the deadline at every join; the chaos driver's restriction on kfake (killable) can go",
			state, members, idD, gap.Round(time.Millisecond))
	}
	t.Logf("after %s of joins at most %s apart, with a rebalance timeout of %s: state %s, members %v",
		time.Since(start).Round(100*time.Millisecond), gap.Round(time.Millisecond), rebalance, state, members)

	// Once the joins stop, the deadline comes: D, which never joined, goes
	// and E's last join is answered.
	if code := heartbeat(); code != kerr.RebalanceInProgress.Code {
		t.Fatalf("D's heartbeat during the rebalance: code %d, want REBALANCE_IN_PROGRESS", code)
	}
	resp, err = join(client(), idE)
	if err != nil || resp.ErrorCode != 0 {
		t.Fatalf("E's last join: %v %+v", err, resp)
	}
	if _, members := describe(admin); slices.Contains(members, idD) || !slices.Contains(members, idE) {
		t.Fatalf("after the rebalance: members %v, want E (%s) alone", members, idE)
	}
}
