package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/kbatchtest"
	"github.com/kbatch/kbatch/offsets"
)

const childEnv = "KBATCH_ROLLUP_CHILD_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(childEnv); args != "" {
		os.Args = append([]string{os.Args[0]}, strings.Split(args, "\n")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func dsn(t *testing.T) string {
	t.Helper()
	d := os.Getenv("KBATCH_PG_DSN")
	if d == "" {
		t.Skip("KBATCH_PG_DSN is not set: no PostgreSQL to test against")
	}
	return d
}

func testPrefix() string {
	return strings.ReplaceAll(strings.ToLower(kbatchtest.UniqueName("ru")), "-", "_") + "_"
}

// testRollup makes a rollup on tables of the test's own.
func testRollup(t *testing.T, prefix string) (*rollup, *pgxpool.Pool) {
	t.Helper()
	pool, err := openPool(context.Background(), dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	r := newRollup(pool, "g", prefix, 10*time.Second, time.Hour)
	if err := r.setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+r.t.minute+", "+r.t.late+", "+r.t.open+", "+r.t.offsets)
	})
	return r, pool
}

var (
	tp0  = offsets.Partition{Topic: "t", Partition: 0}
	base = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
)

// batchAt makes a batch of partition 0 from offset first.
func batchAt(token consumer.FencingToken, first int64, recs ...*kgo.Record) *consumer.Batch {
	for i, r := range recs {
		r.Topic, r.Partition, r.Offset = "t", 0, first+int64(i)
	}
	return consumer.NewTestBatch("t", 0, recs, nil).WithToken(token)
}

func start(t *testing.T, r *rollup, token consumer.FencingToken) int64 {
	t.Helper()
	s, err := r.startOffsets(context.Background(), token, []offsets.Partition{tp0})
	if err != nil {
		t.Fatal(err)
	}
	return s[tp0]
}

// Guards the late-record policy and the once-per-window write: a record
// behind the watermark whose window is open updates it; one whose window
// closed goes to the late table; a window is written when the watermark
// passes its end plus lateness, with its full total, once; a restart from
// the checkpoint (a new process) carries the open windows on.
func TestWindowsCloseOnceAndLateRecordsGoAside(t *testing.T) {
	prefix := testPrefix()
	r, pool := testRollup(t, prefix)
	ctx := context.Background()
	start(t, r, 1)
	at := func(d time.Duration) time.Time { return base.Add(d) }
	// The watermark reaches 12:01:05: window 12:00 stays open (it closes
	// at 12:01:10 with 10s of lateness) and takes the record at 12:00:59;
	// window 11:59 closed at 12:00:10, so the record at 11:59:59 goes aside.
	b := batchAt(1, 0,
		event("a", 1, at(0)), event("a", 2, at(30*time.Second)), event("b", 5, at(65*time.Second)),
		event("a", 4, at(59*time.Second)), // behind the watermark, window 12:00 still open: updates it
		event("a", 100, at(-time.Second)), // window 11:59 closed at watermark 12:00:10: late
	)
	if err := r.handle(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := readResult(ctx, pool, r.t)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.minute) != 0 {
		t.Fatalf("windows written before any closed: %v", got.minute)
	}
	if len(got.late) != 1 || got.late["0/4"] != 100 {
		t.Fatalf("late records %v, want offset 4 only", got.late)
	}

	// A new process takes over from the checkpoint and moves the
	// watermark past 12:01:10: window 12:00 closes with all 3 records of a.
	r2 := newRollup(pool, "g", prefix, 10*time.Second, time.Hour)
	if next := start(t, r2, 2); next != 5 {
		t.Fatalf("restart at offset %d, want 5", next)
	}
	if err := r2.handle(ctx, batchAt(2, 5, event("b", 1, at(71*time.Second)))); err != nil {
		t.Fatal(err)
	}
	got, err = readResult(ctx, pool, r.t)
	if err != nil {
		t.Fatal(err)
	}
	want := map[winKey]agg{{"a", base.UnixMilli()}: {count: 3, sum: 7}}
	if len(got.minute) != 1 || got.minute[winKey{"a", base.UnixMilli()}] != want[winKey{"a", base.UnixMilli()}] {
		t.Fatalf("windows %v, want %v", got.minute, want)
	}
	// The first owner is a zombie now: its save is refused.
	err = r.handle(ctx, batchAt(1, 5, event("b", 1, at(3*time.Minute))))
	if !errors.Is(err, errFenced) {
		t.Fatalf("the old owner's save returned %v, want it refused", err)
	}
}

type child struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

func (c *child) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func startChild(t *testing.T, name string, args ...string) *child {
	t.Helper()
	c := &child{name: name, done: make(chan error, 1)}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(args, "\n"))
	c.cmd.Stdout, c.cmd.Stderr = c, c
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
		c.done <- nil
		if t.Failed() {
			c.mu.Lock()
			t.Logf("output of %s:\n%s", name, c.out.String())
			c.mu.Unlock()
		}
	})
	return c
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func wantKilled(t *testing.T, c *child, d time.Duration) {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("%s ended with %v, want killed by SIGKILL", c.name, err)
		}
	case <-time.After(d):
		t.Fatalf("%s did not die within %s", c.name, d)
	}
}

// Guards crash safety end to end, with members as child processes on a
// broker (KAFKA_BROKERS, else embedded) and PostgreSQL: member A dies by
// SIGKILL inside a save transaction; B and C share the partitions; C is
// killed by SIGKILL mid-stream; B finishes. The closed windows and the late
// table equal a recomputation from the topic.
func TestCrashWindowTotalsEqualRecomputation(t *testing.T) {
	pgDSN := dsn(t)
	prefix := testPrefix()
	r, pool := testRollup(t, prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k := kbatchtest.New(t)
	topic := kbatchtest.Name(t, "rollup-crash")
	group := kbatchtest.Name(t, "rollup-g")
	const records, partitions = 40000, 4
	lateness := 10 * time.Second
	if err := k.CreateTopic(ctx, topic, partitions); err != nil {
		t.Fatal(err)
	}
	if err := k.Produce(ctx, topic, records, demoEvents(base, records, 20, 20, lateness)); err != nil {
		t.Fatal(err)
	}
	if err := k.ProduceEven(ctx, topic, partitions, func(int) *kgo.Record { return event(tickKey, 0, base.Add(time.Hour)) }); err != nil {
		t.Fatal(err)
	}
	want, err := recompute(ctx, k, topic, lateness)
	if err != nil {
		t.Fatal(err)
	}
	args := func(extra ...string) []string {
		return append([]string{"-serve", "-brokers", strings.Join(k.Brokers(), ","), "-topic", topic, "-group", group,
			"-dsn", pgDSN, "-prefix", prefix, "-batch", "300", "-lateness", lateness.String(), "-checkpoint", "100ms",
			"-session-timeout", "6s"}, extra...)
	}
	progress := func() int {
		got, _ := readResult(ctx, pool, r.t)
		return got.windows()
	}

	a := startChild(t, "A", args("-die-in-save", "6")...)
	wantKilled(t, a, 2*time.Minute)
	t.Logf("A died inside a save; %d of %d windows written", progress(), want.windows())

	b := startChild(t, "B", args()...)
	c := startChild(t, "C", args()...)
	before := progress()
	waitFor(t, 2*time.Minute, "B and C to write windows", func() bool { return progress() > before+20 })
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	wantKilled(t, c, time.Minute)
	t.Logf("C killed by SIGKILL; %d of %d windows written", progress(), want.windows())

	var got result
	waitFor(t, 3*time.Minute, "every window closed", func() bool {
		got, err = readResult(ctx, pool, r.t)
		return err == nil && got.windows() >= want.windows() && len(got.late) >= len(want.late)
	})
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.done:
		b.done <- err
		if err != nil {
			t.Errorf("B stopped with %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("B did not stop within 1m of SIGTERM")
	}
	if got, err = readResult(ctx, pool, r.t); err != nil {
		t.Fatal(err)
	}
	diff := want.diff(got)
	t.Logf("CRASH-SUMMARY rollup records=%d windows=%d late=%d equal_to_recomputation=%t",
		records, got.windows(), len(got.late), diff == "")
	if diff != "" {
		t.Fatal(diff)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Guards the service's endpoints: -metrics serves kbatch's and the rollup's
// metrics and the consumer's health.
func TestServeMetricsAndHealth(t *testing.T) {
	prefix := testPrefix()
	testRollup(t, prefix) // the tables, dropped at the end
	k := kbatchtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic := kbatchtest.Name(t, "rollup-metrics")
	if err := k.CreateTopic(ctx, topic, 1); err != nil {
		t.Fatal(err)
	}
	// Events at 12:00, 12:01 and 12:02: the watermark 12:02 closes window 12:00 only.
	if err := k.Produce(ctx, topic, 3, func(i int) *kgo.Record { return event("a", 1, base.Add(time.Duration(i)*time.Minute)) }); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	f := flags{brokers: strings.Join(k.Brokers(), ","), topic: topic, group: kbatchtest.Name(t, "g"), dsn: dsn(t),
		prefix: prefix, metrics: addr, batch: 100, lateness: 10 * time.Second, checkpoint: time.Second, sessionTimeout: 6 * time.Second}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serve(runCtx, f, nil) }()
	waitFor(t, time.Minute, "the closed windows reported", func() bool {
		code, body := get("http://" + addr + "/metrics")
		return code == 200 && strings.Contains(body, "rollup_windows_written_total 1") && strings.Contains(body, "kbatch_")
	})
	for _, path := range []string{"/readyz", "/healthz"} {
		if code, _ := get("http://" + addr + path); code != 200 {
			t.Errorf("%s answered %d, want 200", path, code)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
