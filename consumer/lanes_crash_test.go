package consumer

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

const (
	modeKeysKill  = "keys-kill"   // ByKey; the record at KBATCH_TEST_AT never completes; SIGKILL once the rest is done and committed
	modeKeysToEnd = "keys-to-end" // ByKey; handle until KBATCH_TEST_END records are complete, then Close
)

// crashKey is the key of record i in the ByKey crash test: every tenth
// record, from offset 3, is of key "stuck".
func crashKey(i int) string {
	if i%10 == 3 {
		return "stuck"
	}
	return "k" + strconv.Itoa(i%50)
}

// runKeysChild is a ByKey group member's main for the crash test. Each
// handled record is appended to the ledger as "offset 1".
func runKeysChild(mode string, brokers []string, at, end int64) int {
	env := func(k string) string { return os.Getenv("KBATCH_TEST_" + k) }
	ledger, err := os.OpenFile(env("LEDGER"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer ledger.Close()
	cfg := Config{
		Brokers: brokers, Group: env("GROUP"), Topics: []string{env("TOPIC")},
		Batch:       batcher.Policy{MaxRecords: 20, MaxWait: 20 * time.Millisecond},
		Commit:      offsets.Policy{EveryRecords: 1 << 30, Interval: 50 * time.Millisecond},
		Ordering:    ByKey,
		Concurrency: 8,
		ClientOpts:  []kgo.Opt{kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(300 * time.Millisecond)},
	}
	c, err := New(cfg, func(ctx context.Context, b *Batch) error {
		w := bufio.NewWriter(ledger)
		for _, r := range b.Records {
			if mode == modeKeysKill && r.Offset == at {
				w.Flush()
				<-ctx.Done() // never completes: the watermark stays here
				return ctx.Err()
			}
			fmt.Fprintf(w, "%d 1\n", r.Offset)
		}
		return w.Flush()
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	deadline := time.After(90 * time.Second)
	complete := func() int64 { s := c.Stats(); return s.Records + s.Skipped }
	for complete() < end {
		select {
		case err := <-done:
			fmt.Fprintln(os.Stderr, "run ended early:", err)
			return 2
		case <-deadline:
			fmt.Fprintln(os.Stderr, "timed out with", complete(), "records complete")
			return 2
		case <-time.After(10 * time.Millisecond):
		}
	}
	if mode == modeKeysKill {
		// Die once a commit names every completed record beyond the
		// watermark (end-at of them: the records below at completed too).
		tp := offsets.Partition{Topic: env("TOPIC"), Partition: 0}
		for named := int64(0); named < end-at; {
			select {
			case <-deadline:
				fmt.Fprintln(os.Stderr, "timed out waiting for the commit, named", named)
				return 2
			case <-time.After(20 * time.Millisecond):
			}
			committed, meta, err := c.fetchCommitted(context.Background(), tp)
			if err != nil || committed != at {
				continue
			}
			rs, _ := offsets.DecodeCompleted(committed, meta)
			named = 0
			for _, r := range rs {
				named += r.Len()
			}
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
	_ = c.Close()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0
}

// Guards the restart of ByKey after a crash: a member SIGKILLed while one key
// is stuck, after the records of the other keys completed and were committed
// (the watermark at the stuck record, the rest in the metadata), is followed
// by a member that handles exactly the stuck key's records, each once and in
// order, and skips every record the first one completed beyond the watermark.
func TestByKeyRestartAfterACrashRedoesOnlyWhatDidNotComplete(t *testing.T) {
	if testing.Short() {
		t.Skip("starts member processes")
	}
	const n, stuckAt = 1000, 3
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 1)
	produceLaneKeys(t, brokers, topic, n, crashKey)
	stuck := map[int64]bool{}
	for i := range n {
		if crashKey(i) == "stuck" {
			stuck[int64(i)] = true
		}
	}
	ch := child{brokers: brokers, topic: topic, group: kafkatest.NewGroup(t),
		ledger: filepath.Join(t.TempDir(), "ledger"), end: int64(n - len(stuck))}
	if code := ch.run(t, modeKeysKill, stuckAt); code != -int(syscall.SIGKILL) {
		t.Fatalf("first member exited with %d, want killed", code)
	}
	first := readLedger(t, ch.ledger)
	if len(first) != n-len(stuck) {
		t.Fatalf("first member handled %d records, want %d", len(first), n-len(stuck))
	}
	at, meta := committedMeta(t, brokers, ch.group, topic)
	if at != stuckAt {
		t.Fatalf("committed %d, want %d (the stuck record)", at, stuckAt)
	}
	if named, err := offsets.DecodeCompleted(at, meta); err != nil || len(named) == 0 {
		t.Fatalf("committed metadata %q: %v", meta, err)
	}
	ch.end = int64(n) - stuckAt // complete in the second run: handled or skipped
	if code := ch.run(t, modeKeysToEnd, 0); code != 0 {
		t.Fatalf("second member exited with %d", code)
	}
	all := readLedger(t, ch.ledger)
	for o := int64(0); o < n; o++ {
		if got := len(all[o]); got != 1 {
			t.Fatalf("offset %d handled %d times in all, want once (stuck key: %v)", o, got, stuck[o])
		}
	}
	second := readLedgerOrder(t, ch.ledger)[len(first):]
	for i, o := range second {
		if !stuck[o] {
			t.Fatalf("second member handled %d, completed by the first beyond the watermark", o)
		}
		if i > 0 && o <= second[i-1] {
			t.Fatalf("stuck key handled out of order: %d after %d", o, second[i-1])
		}
	}
	if got, _ := committedMeta(t, brokers, ch.group, topic); got != n {
		t.Fatalf("committed %d at the end, want %d", got, n)
	}
}

// readLedgerOrder returns the ledger's offsets in the order written.
func readLedgerOrder(t *testing.T, path string) []int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var o int64
		var a int
		if _, err := fmt.Sscanf(sc.Text(), "%d %d", &o, &a); err != nil {
			t.Fatalf("ledger line %q: %v", sc.Text(), err)
		}
		out = append(out, o)
	}
	return out
}
