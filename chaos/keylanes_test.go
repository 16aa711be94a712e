package chaos

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/kbatchtest"
)

// TestChaosKeyLanes is TestChaos with the members on the ByKey ordering
// (8 lanes per partition) over records sharing 1200 keys: while members are
// SIGKILLed, restarted and leave gracefully, no record is lost and, within
// each ownership run, the records of every key are handled in offset order.
// A restart skips what the commit metadata names as completed beyond the
// watermark and redoes the rest; a graceful leave drains every lane and
// commits. It runs with KBATCH_CHAOS=1, on the group protocols of
// KBATCH_CHAOS_KEY_PROTOCOLS (default "classic").
func TestChaosKeyLanes(t *testing.T) {
	if os.Getenv("KBATCH_CHAOS") != "1" {
		t.Skip("chaos suite skipped: run it with KBATCH_CHAOS=1 go test -v -timeout 40m ./chaos/ -run TestChaosKeyLanes")
	}
	if len(envErrs) > 0 {
		t.Fatalf("chaos: bad environment: %s", strings.Join(envErrs, "; "))
	}
	if *flagMembers < 2 || *flagPartitions < *flagMembers || *flagRecords < *flagPartitions || *flagKills < 0 {
		t.Fatalf("chaos: need members >= 2, partitions >= members, records >= partitions, kills >= 0")
	}
	bin := buildMember(t)
	for _, proto := range strings.Split(envString("KBATCH_CHAOS_KEY_PROTOCOLS", "classic"), ",") {
		proto = strings.TrimSpace(proto)
		if proto != "classic" && proto != "consumer" {
			t.Fatalf("chaos: unknown protocol %q in KBATCH_CHAOS_KEY_PROTOCOLS (classic, consumer)", proto)
		}
		t.Run(proto+"+keys", func(t *testing.T) { runChaos(t, bin, proto, false, true) })
	}
}

// produceLanes writes n records for the key-lanes variant: record i on
// partition i mod the partition count, with key k<i mod laneKeys>.
func produceLanes(ctx context.Context, brokers []string, topic string, n int, pad string) error {
	c, err := kbatchtest.Connect(brokers...)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.ProduceEven(ctx, topic, n, func(i int) *kgo.Record {
		return &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%laneKeys), Value: fmt.Appendf(nil, "chaos %d %s", i, pad)}
	})
}

// Guards the auditor's ByKey mode: records of different keys may come in any
// offset order within a run, but a key going back in the same run is a
// violation, and a replay in a new run is not.
func TestAuditByKeyJudgesOrderPerKey(t *testing.T) {
	// One partition of 6 records: offset o holds k<o mod 2>.
	a := newAudit([]int64{6}, 2)
	a.ByKey = true
	inc := "" +
		"0 1 1 m-a k1\n" +
		"0 0 1 m-a k0\n" + // another key, earlier offset: allowed
		"0 3 1 m-a k1\n" +
		"0 2 1 m-a k0\n" +
		"0 1 1 m-a k1\n" + // k1 back from 3 to 1 in the same run: a violation
		"0 4 2 m-a k0\n" + // a new run
		"0 2 2 m-a k0\n" + // k0 back in the new run: a violation
		"0 5 1 m-b k1\n" // another member: a new run
	if err := a.addFile("inc", strings.NewReader(inc)); err != nil {
		t.Fatal(err)
	}
	if a.OrderViolations != 2 || a.KeyMismatches != 0 {
		t.Fatalf("order violations %d (want 2), key mismatches %d (want 0); %v", a.OrderViolations, a.KeyMismatches, a.Examples)
	}
	if lost, _ := a.Lost(); lost != 0 {
		t.Fatalf("lost %d, want 0", lost)
	}
}
