package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/kbatchtest"
)

// childEnv, when set, makes the test binary run the command with the
// arguments it holds (one per line): the crash test's processes.
const childEnv = "KBATCH_OUTBOX_CHILD_ARGS"

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

// testTables makes the tables of a test of its own and drops them after.
func testTables(t *testing.T) (flags, *pgxpool.Pool, tables) {
	t.Helper()
	f := flags{dsn: dsn(t), prefix: strings.ReplaceAll(strings.ToLower(kbatchtest.UniqueName("ob")), "-", "_") + "_"}
	pool, tb, err := openPool(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+tb.orders+", "+tb.outbox+", "+tb.shipments)
		pool.Close()
	})
	return f, pool, tb
}

func orderRecord(key string, order int64) *kgo.Record {
	return &kgo.Record{Value: fmt.Appendf(nil, `{"order":%d,"customer":"c","amount_cents":100}`, order),
		Headers: []kgo.RecordHeader{{Key: dedupe.DefaultHeader, Value: []byte(key)}}}
}

// Guards the handler's part of exactly once: two copies of one outbox row in
// one batch (the relay produced a run twice, back to back) ship once, and a
// record that is not an order is refused permanently after the records
// before it shipped.
func TestShipperShipsCopiesInOneBatchOnce(t *testing.T) {
	_, pool, tb := testTables(t)
	s := newShipper(pool, tb)
	recs := []*kgo.Record{orderRecord("outbox-1", 10), orderRecord("outbox-2", 11), orderRecord("outbox-1", 10), {Value: []byte("junk")}}
	states := []consumer.RecordState{{Key: "outbox-1"}, {Key: "outbox-2"}, {Key: "outbox-1"}, {Key: "outbox-3"}}
	err := s.handle(context.Background(), consumer.NewTestBatch("t", 0, recs, states))
	var pe *consumer.PartialError
	if !errors.As(err, &pe) || pe.Index != 3 || !consumer.IsPermanent(pe.Err) {
		t.Fatalf("handler returned %v, want a permanent failure at record 3", err)
	}
	st, err := countShipments(context.Background(), pool, tb)
	if err != nil {
		t.Fatal(err)
	}
	if st.rows != 2 || st.repeated != 0 {
		t.Fatalf("got %+v, want 2 shipments, none repeated", st)
	}
}

// Guards the backlog gauge and the relay's run: rows placed show as
// backlog; after a run they are on the topic, marked sent, with their row id
// as Idempotency-Key, and the backlog is 0.
func TestRelaySendsInOrderAndTheBacklogFalls(t *testing.T) {
	_, pool, tb := testTables(t)
	ctx := context.Background()
	k := kbatchtest.New(t)
	topic := kbatchtest.Name(t, "outbox")
	if err := k.CreateTopic(ctx, topic, 1); err != nil {
		t.Fatal(err)
	}
	if err := placeOrders(ctx, pool, tb, topic, 0, 30); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r := newRelay(pool, cl, tb, 100, time.Second)
	if err := r.measure(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(r.backlog); got != 30 {
		t.Fatalf("backlog %v before relaying, want 30", got)
	}
	if n, err := r.once(ctx); err != nil || n != 30 {
		t.Fatalf("relayed %d, %v; want 30", n, err)
	}
	if err := r.measure(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(r.backlog); got != 0 {
		t.Fatalf("backlog %v after relaying, want 0", got)
	}
	// The topic holds the rows in id order, keyed by their id.
	rd, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var keys []string
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for len(keys) < 30 && pctx.Err() == nil {
		rd.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			keys = append(keys, string(r.Headers[0].Value))
		})
	}
	for i, k := range keys {
		if want := outboxKey(int64(i + 1)); k != want {
			t.Fatalf("record %d has key %q, want %q (id order)", i, k, want)
		}
	}
	if len(keys) != 30 {
		t.Fatalf("%d records on the topic, want 30", len(keys))
	}
}

// child is a process of the crash test.
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

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
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
			t.Logf("output of %s:\n%s", name, c.output())
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

// Guards the outbox end to end with processes on a broker (KAFKA_BROKERS,
// else embedded) and PostgreSQL: the relay dies by SIGKILL after producing
// a run and before marking it sent; a second relay produces that run again
// and the rest, while more orders are placed. Every outbox row is sent,
// the topic holds the copies, and the consumer shipped every order exactly
// once.
func TestRelayCrashBetweenProduceAndMark(t *testing.T) {
	f, pool, tb := testTables(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k := kbatchtest.New(t)
	topic := kbatchtest.Name(t, "outbox-crash")
	group := kbatchtest.Name(t, "shipper")
	if err := k.CreateTopic(ctx, topic, 3); err != nil {
		t.Fatal(err)
	}
	const first, more, run = 4000, 1000, 500
	if err := placeOrders(ctx, pool, tb, topic, 0, first); err != nil {
		t.Fatal(err)
	}
	args := func(mode string, extra ...string) []string {
		return append([]string{"-mode", mode, "-brokers", strings.Join(k.Brokers(), ","), "-topic", topic, "-group", group,
			"-dsn", f.dsn, "-prefix", f.prefix, "-batch", fmt.Sprint(run), "-poll", "200ms"}, extra...)
	}
	unsent := func() int64 {
		var n int64
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM `+tb.outbox+` WHERE sent_at IS NULL`).Scan(&n)
		return n
	}
	shipped := func() shipmentStats {
		st, _ := countShipments(ctx, pool, tb)
		return st
	}
	cons := startChild(t, "consumer", args("consumer")...)

	r1 := startChild(t, "relay 1", args("relay", "-die-after-produce", "3")...)
	select {
	case err := <-r1.done:
		r1.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("relay 1 ended with %v, want killed by SIGKILL", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("relay 1 did not die within 2m")
	}
	if n := unsent(); n != first-2*run {
		t.Fatalf("%d rows unsent after the crash, want %d (two runs marked, the third produced only)", n, first-2*run)
	}

	r2 := startChild(t, "relay 2", args("relay")...)
	if err := placeOrders(ctx, pool, tb, topic, first, first+more); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "every outbox row sent and shipped", func() bool {
		return unsent() == 0 && shipped().distinct == first+more
	})
	end, err := k.EndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	// Every record, copies included, is through the consumer once its
	// group committed the end of the topic.
	if err := k.WaitCommitted(ctx, group, topic, end); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*child{r2, cons} {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-c.done:
			c.done <- err
			if err != nil {
				t.Errorf("%s stopped with %v", c.name, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s did not stop within 1m of SIGTERM", c.name)
		}
	}
	var produced int64
	for _, n := range end {
		produced += n
	}
	st := shipped()
	var missing int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+tb.outbox+` o
		WHERE NOT EXISTS (SELECT 1 FROM `+tb.shipments+` s WHERE s.outbox_id = o.id)`).Scan(&missing); err != nil {
		t.Fatal(err)
	}
	t.Logf("CRASH-SUMMARY outbox-relay orders=%d produced=%d shipments=%d missing=%d shipped_twice=%d",
		first+more, produced, st.rows, missing, st.repeated)
	if produced < first+more+run {
		t.Fatalf("%d records produced for %d rows: the run produced before the crash was not produced again", produced, first+more)
	}
	if st.rows != first+more || missing != 0 || st.repeated != 0 {
		t.Fatalf("got %+v and %d missing, want %d orders shipped once each", st, missing, first+more)
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

// Guards the services' endpoints: the relay serves its backlog gauge, the
// consumer kbatch's metrics and its health.
func TestServeMetricsAndHealth(t *testing.T) {
	f, pool, tb := testTables(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := kbatchtest.New(t)
	f.topic = kbatchtest.Name(t, "outbox-metrics")
	f.group = kbatchtest.Name(t, "shipper")
	f.brokers = strings.Join(k.Brokers(), ",")
	f.batch, f.poll = 100, 100*time.Millisecond
	if err := k.CreateTopic(ctx, f.topic, 1); err != nil {
		t.Fatal(err)
	}
	if err := placeOrders(ctx, pool, tb, f.topic, 0, 5); err != nil {
		t.Fatal(err)
	}
	relayAddr, consumerAddr := freeAddr(t), freeAddr(t)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	fr, fc := f, f
	fr.metrics, fc.metrics = relayAddr, consumerAddr
	go func() { done <- runRelay(runCtx, fr, nil) }()
	go func() { done <- runConsumer(runCtx, fc, nil) }()
	waitFor(t, time.Minute, "the backlog gauge at 0 after 5 rows sent", func() bool {
		code, body := get("http://" + relayAddr + "/metrics")
		return code == 200 && strings.Contains(body, "outbox_relay_rows_sent_total 5") && strings.Contains(body, "outbox_relay_backlog_rows 0")
	})
	waitFor(t, time.Minute, "the 5 orders shipped and reported", func() bool {
		code, body := get("http://" + consumerAddr + "/metrics")
		return code == 200 && strings.Contains(body, "outbox_consumer_orders_shipped_total 5") && strings.Contains(body, "kbatch_")
	})
	for _, path := range []string{"/readyz", "/healthz"} {
		if code, _ := get("http://" + consumerAddr + path); code != 200 {
			t.Errorf("consumer %s answered %d, want 200", path, code)
		}
	}
	stop()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
