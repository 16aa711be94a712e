package consumer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/dedupe/kafkastore"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

// The crash tests run group members as child processes (this test binary,
// re-executed with childEnv set), so that a member can really die: SIGKILL,
// or os.Exit from inside its handler. State that must survive is in Kafka:
// the group's offsets and the kafkastore changelog.

const childEnv = "KBATCH_TEST_CHILD_MODE"

const (
	modeKillAtOffset = "kill-at-offset" // SIGKILL itself when a batch starting at KBATCH_TEST_AT arrives
	modeExitAtOffset = "exit-at-offset" // os.Exit(3) while handling the record at KBATCH_TEST_AT
	modeRunToEnd     = "run-to-end"     // handle until KBATCH_TEST_END records are complete, then Close
)

// runChild is a group member's main. Each handled record is appended to the
// ledger file as "offset attempts" before the handler returns.
func runChild() int {
	env := func(k string) string { return os.Getenv("KBATCH_TEST_" + k) }
	at, _ := strconv.ParseInt(env("AT"), 10, 64)
	end, _ := strconv.ParseInt(env("END"), 10, 64)
	mode := os.Getenv(childEnv)
	brokers := strings.Split(env("BROKERS"), ",")
	if mode == modeKeysKill || mode == modeKeysToEnd {
		return runKeysChild(mode, brokers, at, end)
	}

	ledger, err := os.OpenFile(env("LEDGER"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer ledger.Close()
	store, err := kafkastore.New(kafkastore.Options{Brokers: brokers, Group: env("GROUP")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer store.Close()
	cfg := Config{
		Brokers: brokers, Group: env("GROUP"), Topics: []string{env("TOPIC")},
		Batch: batcher.Policy{MaxRecords: 100, MaxWait: 20 * time.Millisecond},
		// No commit on the window: a killed member has committed nothing.
		Commit:     offsets.Policy{EveryRecords: 1 << 30, Interval: time.Hour},
		Dedupe:     &Dedupe{Store: store},
		DeadLetter: &DeadLetter{},
		Retry:      Retry{Initial: time.Millisecond, Max: 10 * time.Millisecond, MaxAttempts: 3},
		ClientOpts: []kgo.Opt{kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(300 * time.Millisecond)},
	}
	c, err := New(cfg, func(ctx context.Context, b *Batch) error {
		if mode == modeKillAtOffset && b.FirstOffset() == at {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
		w := bufio.NewWriter(ledger)
		for i, r := range b.Records {
			if mode == modeExitAtOffset && r.Offset == at {
				w.Flush()
				os.Exit(3)
			}
			fmt.Fprintf(w, "%d %d\n", r.Offset, b.Attempts(i))
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
	complete := func() int64 { s := c.Stats(); return s.Records + s.Skipped + s.DeadLettered }
	for complete() < end {
		select {
		case err := <-done:
			fmt.Fprintln(os.Stderr, "run ended early:", err)
			return 2
		case <-deadline:
			fmt.Fprintln(os.Stderr, "timed out with", complete(), "records complete")
			return 2
		case <-time.After(20 * time.Millisecond):
		}
	}
	_ = c.Close()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0
}

type child struct {
	brokers      []string
	topic, group string
	ledger       string
	end          int64
}

// run starts a member in mode and waits for it; it returns the exit code, or
// -9 when it was killed by SIGKILL.
func (ch child) run(t *testing.T, mode string, at int64) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"="+mode,
		"KBATCH_TEST_BROKERS="+strings.Join(ch.brokers, ","),
		"KBATCH_TEST_TOPIC="+ch.topic, "KBATCH_TEST_GROUP="+ch.group,
		"KBATCH_TEST_LEDGER="+ch.ledger,
		"KBATCH_TEST_AT="+strconv.FormatInt(at, 10), "KBATCH_TEST_END="+strconv.FormatInt(ch.end, 10),
	)
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	}
	t.Fatalf("running a member: %v", err)
	return 0
}

// readLedger returns offset -> attempts of each handling, in order.
func readLedger(t *testing.T, path string) map[int64][]int {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[int64][]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[int64][]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var o int64
		var a int
		if _, err := fmt.Sscanf(sc.Text(), "%d %d", &o, &a); err != nil {
			t.Fatalf("ledger line %q: %v", sc.Text(), err)
		}
		out[o] = append(out[o], a)
	}
	return out
}

func newChild(t *testing.T, n int) child {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, 1)
	kafkatest.Produce(t, brokers, topic, n, value100)
	return child{brokers: brokers, topic: topic, group: kafkatest.NewGroup(t),
		ledger: filepath.Join(t.TempDir(), "ledger"), end: int64(n)}
}

// Guards invariant 5 across a crash: a member SIGKILLed after handling
// batches but before committing them restarts without handing those records
// out again (they are done in the Kafka store), and the records it was
// handing out when it died come back with their attempts grown.
func TestKilledMemberDoesNotRedoDoneRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("starts member processes")
	}
	const n, killAt = 1000, 300
	ch := newChild(t, n)
	if code := ch.run(t, modeKillAtOffset, killAt); code != -int(syscall.SIGKILL) {
		t.Fatalf("first member exited with %d, want killed", code)
	}
	if got := kafkatest.CommittedOffsets(t, ch.brokers, ch.group, ch.topic); len(got) != 0 {
		t.Fatalf("the killed member committed %v; the test needs nothing committed", got)
	}
	first := readLedger(t, ch.ledger)
	if len(first) != killAt {
		t.Fatalf("first member handled %d records, want %d", len(first), killAt)
	}
	if code := ch.run(t, modeRunToEnd, 0); code != 0 {
		t.Fatalf("second member exited with %d", code)
	}
	all := readLedger(t, ch.ledger)
	for o := int64(0); o < n; o++ {
		h := all[o]
		switch {
		case o < killAt && len(h) != 1:
			t.Fatalf("offset %d handled %d times: a record done before the crash was handed out again", o, len(h))
		case o >= killAt && o < killAt+100 && (len(h) != 1 || h[0] != 2):
			t.Fatalf("offset %d (in flight at the crash) handled with attempts %v, want once with 2", o, h)
		case o >= killAt+100 && (len(h) != 1 || h[0] != 1):
			t.Fatalf("offset %d handled with attempts %v, want once with 1", o, h)
		}
	}
	if got := kafkatest.CommittedOffsets(t, ch.brokers, ch.group, ch.topic)[0]; got != n {
		t.Fatalf("committed %d at the end, want %d", got, n)
	}
}

// Guards the reason attempts are durable: a record that makes the process
// exit every time it is handled reaches the dead-letter topic after
// MaxAttempts restarts, without calling the handler, and the partition moves
// on. No in-memory retry counter could do this.
func TestRecordThatCrashesTheProcessIsDeadLetteredAfterMaxAttemptsRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts member processes")
	}
	const n, poison, maxAttempts = 400, 250, 3
	ch := newChild(t, n)
	crashes := 0
	for run := 1; ; run++ {
		if run > maxAttempts+2 {
			t.Fatalf("still crashing after %d runs", run-1)
		}
		code := ch.run(t, modeExitAtOffset, poison)
		if code == 0 {
			break
		}
		if code != 3 {
			t.Fatalf("run %d exited with %d, want 3 (the poison record) or 0", run, code)
		}
		crashes++
	}
	if crashes != maxAttempts {
		t.Fatalf("the process crashed %d times, want MaxAttempts = %d", crashes, maxAttempts)
	}
	all := readLedger(t, ch.ledger)
	for o := int64(0); o < n; o++ {
		if o == poison {
			continue
		}
		if len(all[o]) == 0 {
			t.Fatalf("offset %d never handled", o)
		}
	}
	dlq := readAll(t, ch.brokers, ch.topic+".dlq", 1, 15*time.Second)
	if len(dlq) != 1 || header(dlq[0], HeaderSourceOffset) != strconv.Itoa(poison) || header(dlq[0], HeaderAttempts) != strconv.Itoa(maxAttempts) {
		t.Fatalf("dead-letter topic: %d records, want the poison one with %d attempts", len(dlq), maxAttempts)
	}
	if got := kafkatest.CommittedOffsets(t, ch.brokers, ch.group, ch.topic)[0]; got != n {
		t.Fatalf("committed %d at the end, want %d", got, n)
	}
}
