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
	"github.com/kbatch/kbatch/kbatchtest"
	"github.com/kbatch/kbatch/offsets"
)

// childEnv, when set, makes the test binary run the service with the
// arguments it holds (one per line): the crash test's members.
const childEnv = "KBATCH_PGSINK_CHILD_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(childEnv); args != "" {
		os.Args = append([]string{os.Args[0]}, strings.Split(args, "\n")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// dsn returns the PostgreSQL of the tests, or skips: they need
// KBATCH_PG_DSN (scripts/ci-pg.sh sets it).
func dsn(t *testing.T) string {
	t.Helper()
	d := os.Getenv("KBATCH_PG_DSN")
	if d == "" {
		t.Skip("KBATCH_PG_DSN is not set: no PostgreSQL to test against")
	}
	return d
}

// testSink makes a sink on tables of the test's own.
func testSink(t *testing.T) (*sink, *pgxpool.Pool, string) {
	t.Helper()
	ctx := context.Background()
	pool, err := openPool(ctx, flags{dsn: dsn(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	name := tableName()
	rows, offs := name+"_rows", name+"_offsets"
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+quote(rows)+", "+quote(offs))
	})
	s := newSink(pool, "g", rows, offs)
	if err := s.setup(ctx); err != nil {
		t.Fatal(err)
	}
	return s, pool, rows
}

// tableName returns a fresh table name prefix, short enough for
// PostgreSQL's 63-byte identifiers.
func tableName() string {
	return strings.ReplaceAll(strings.ToLower(kbatchtest.UniqueName("pgsink")), "-", "_")
}

// batch makes a test batch of partition 0 of topic "t" holding records
// with the given offsets and keys.
func batch(token consumer.FencingToken, first int64, keys ...string) *consumer.Batch {
	recs := make([]*kgo.Record, len(keys))
	for i, k := range keys {
		recs[i] = &kgo.Record{Topic: "t", Partition: 0, Offset: first + int64(i), Key: []byte(k), Value: []byte("v-" + k)}
	}
	return consumer.NewTestBatch("t", 0, recs, nil).WithToken(token)
}

var tp0 = offsets.Partition{Topic: "t", Partition: 0}

func claim(t *testing.T, s *sink, token consumer.FencingToken) int64 {
	t.Helper()
	starts, err := s.startOffsets(context.Background(), token, []offsets.Partition{tp0})
	if err != nil {
		t.Fatal(err)
	}
	return starts[tp0]
}

// Guards the zombie fence: once a newer owner claimed the partition, a
// transaction under the older token is refused and writes nothing, while
// the newer owner's goes through and starts where the sink stopped.
func TestSinkRefusesATransactionUnderAnOlderToken(t *testing.T) {
	s, pool, rows := testSink(t)
	ctx := context.Background()
	if got := claim(t, s, 5); got != -1 {
		t.Fatalf("a partition never written starts at %d, want -1 (Kafka's committed offset)", got)
	}
	if err := s.handle(ctx, batch(5, 0, "a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	if got := claim(t, s, 7); got != 3 {
		t.Fatalf("the new owner starts at %d, want 3", got)
	}
	err := s.handle(ctx, batch(5, 3, "d", "e"))
	if !errors.Is(err, errFenced) {
		t.Fatalf("the old owner's transaction returned %v, want it refused", err)
	}
	if n := testutil.ToFloat64(s.fenced); n != 1 {
		t.Fatalf("fenced counter %v, want 1", n)
	}
	st := stat(t, pool, rows)
	if st.rows != 3 {
		t.Fatalf("%d rows after the refused transaction, want 3", st.rows)
	}
	if err := s.handle(ctx, batch(7, 3, "d", "e")); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, pool, rows); st.rows != 5 || st.duplicated != 0 {
		t.Fatalf("got %+v, want 5 rows written once", st)
	}
	// The old owner may not claim it back under its old token.
	if _, err := s.startOffsets(ctx, 6, []offsets.Partition{tp0}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("a claim under an older token returned %v, want it refused", err)
	}
}

// Guards the offset check: records below the stored next offset (written
// by a transaction this worker did not start from) are not written again.
func TestSinkSkipsRecordsAlreadyWritten(t *testing.T) {
	s, pool, rows := testSink(t)
	ctx := context.Background()
	claim(t, s, 1)
	if err := s.handle(ctx, batch(1, 0, "a", "b", "c", "d")); err != nil {
		t.Fatal(err)
	}
	if err := s.handle(ctx, batch(1, 2, "c", "d", "e", "f")); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, pool, rows); st.rows != 6 || st.records != 6 || st.duplicated != 0 {
		t.Fatalf("got %+v, want 6 rows written once", st)
	}
	if got := claim(t, s, 2); got != 6 {
		t.Fatalf("next offset %d, want 6", got)
	}
}

// Guards the upsert of a batch holding one id twice: one row, the last
// value, both records counted (a multi-row upsert would otherwise fail with
// "cannot affect row a second time").
func TestSinkKeepsTheLastValueOfAnIDRepeatedInABatch(t *testing.T) {
	s, pool, rows := testSink(t)
	ctx := context.Background()
	claim(t, s, 1)
	b := batch(1, 0, "a", "b", "a")
	b.Records[2].Value = []byte("last")
	if err := s.handle(ctx, b); err != nil {
		t.Fatal(err)
	}
	var value []byte
	var applied int
	if err := pool.QueryRow(ctx, "SELECT value, applied FROM "+quote(rows)+" WHERE id = 'a'").Scan(&value, &applied); err != nil {
		t.Fatal(err)
	}
	if string(value) != "last" || applied != 2 {
		t.Fatalf("row a holds %q applied %d, want \"last\" applied 2", value, applied)
	}
}

func stat(t *testing.T, pool *pgxpool.Pool, table string) stats {
	t.Helper()
	st, err := tableStats(context.Background(), pool, table)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// child is a group member run as a child process.
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
		_ = c.cmd.Process.Signal(syscall.SIGCONT)
		_ = c.cmd.Process.Kill()
		<-c.done
		c.done <- nil
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, c.output())
		}
	})
	return c
}

// stopped reports whether the child is stopped (SIGSTOP): state T in
// /proc/<pid>/stat.
func (c *child) stopped() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return false
	}
	_, rest, _ := bytes.Cut(b, []byte(") "))
	return len(rest) > 0 && rest[0] == 'T'
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

// Guards the exactly-once effect end to end, with members as child
// processes on a broker (KAFKA_BROKERS, else embedded) and PostgreSQL:
//
//  1. member A dies by SIGKILL inside a batch's transaction, rows written
//     but not committed;
//  2. member Z takes over, then stops (SIGSTOP) before a batch's
//     transaction: a zombie holding a batch;
//  3. member B joins; Z's session expires, B owns every partition, claims
//     them and copies the rest of the topic;
//  4. Z is woken: its stalled transaction must be refused (B's token is
//     newer) and it rejoins the group as a new member.
//
// At the end the table holds exactly one row per record, each written once,
// and the Kafka commits reached the end of the topic. Under both group
// protocols (under KIP-848 the broker's session timeout applies: 45s by
// default on Apache Kafka).
func TestCrashExactlyOnce(t *testing.T) {
	for _, proto := range []string{"classic", "consumer"} {
		t.Run(proto, func(t *testing.T) { crashExactlyOnce(t, proto) })
	}
}

func crashExactlyOnce(t *testing.T, proto string) {
	pgDSN := dsn(t)
	k := kbatchtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const records, partitions = 20000, 4
	topic := kbatchtest.Name(t, "pgsink-crash")
	group := kbatchtest.Name(t, "pgsink-crash-g")
	if err := k.CreateTopic(ctx, topic, partitions); err != nil {
		t.Fatal(err)
	}
	if err := k.ProduceEven(ctx, topic, records, eventRecord); err != nil {
		t.Fatal(err)
	}
	pool, err := openPool(ctx, flags{dsn: pgDSN})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	table := tableName() + "_rows"
	offsTable := table + "_offsets"
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+quote(table)+", "+quote(offsTable))
	})
	args := func(extra ...string) []string {
		return append([]string{"-serve", "-brokers", strings.Join(k.Brokers(), ","), "-topic", topic, "-group", group,
			"-dsn", pgDSN, "-table", table, "-offsets-table", offsTable, "-batch", "500",
			"-session-timeout", "6s", "-idle-in-transaction-timeout", "3s", "-protocol", proto}, extra...)
	}
	rows := func() stats {
		st, _ := tableStats(ctx, pool, table)
		return st
	}

	// 1. A dies inside its 8th transaction.
	a := startChild(t, "A", args("-die-in-batch", "8")...)
	select {
	case err := <-a.done:
		a.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("A ended with %v, want killed by SIGKILL", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("A did not die within 2m")
	}
	afterA := rows()
	t.Logf("A died by SIGKILL inside a transaction; %d rows committed", afterA.rows)
	if afterA.rows == 0 || afterA.rows >= records {
		t.Fatalf("%d rows after A's crash: the crash did not come mid-stream", afterA.rows)
	}

	// 2. Z stops before its 5th transaction.
	z := startChild(t, "Z", args("-stop-before-batch", "5")...)
	waitFor(t, 2*time.Minute, "Z to stop itself", z.stopped)
	zombieLine := ""
	for _, l := range strings.Split(z.output(), "\n") {
		if strings.Contains(l, "SIGSTOP before the transaction") {
			zombieLine = l
		}
	}
	t.Logf("Z: %s; %d rows committed", zombieLine, rows().rows)

	// 3. B copies the rest once Z's session expired.
	b := startChild(t, "B", args()...)
	waitFor(t, 3*time.Minute, "B to copy every record", func() bool { return rows().rows >= records })

	// 4. Z wakes: its transaction is refused.
	if err := z.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "Z's stalled transaction to be refused", func() bool {
		return strings.Contains(z.output(), "pg-sink: refused")
	})
	for _, m := range []*child{b, z} {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, m := range []*child{b, z} {
		select {
		case err := <-m.done:
			m.done <- err
			if err != nil {
				t.Errorf("%s stopped with %v", m.name, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s did not stop within 1m of SIGTERM", m.name)
		}
	}

	st := rows()
	var missing int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM generate_series(0, $1 - 1) AS i
		WHERE NOT EXISTS (SELECT 1 FROM `+quote(table)+` WHERE id = 'event-' || i)`, records).Scan(&missing); err != nil {
		t.Fatal(err)
	}
	t.Logf("CRASH-SUMMARY pg-sink protocol=%s records=%d rows=%d missing=%d duplicated=%d zombie_refused=%t",
		proto, records, st.rows, missing, st.duplicated, strings.Contains(z.output(), "pg-sink: refused"))
	if st.rows != records || missing != 0 || st.duplicated != 0 || st.records != records {
		t.Fatalf("got %+v and %d missing, want %d rows each written once", st, missing, records)
	}
	committed, err := k.Committed(ctx, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, err := k.EndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p, e := range end {
		if committed[p] != e {
			t.Errorf("partition %d: Kafka commit %d, end %d: the commits for lag tools fell behind", p, committed[p], e)
		}
	}
}

// freeAddr returns a loopback address nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// get fetches url and returns its status and body.
func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Guards the service's endpoints: -metrics serves kbatch's and the sink's
// metrics and the consumer's health.
func TestServeMetricsAndHealth(t *testing.T) {
	pgDSN := dsn(t)
	k := kbatchtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic := kbatchtest.Name(t, "pgsink-metrics")
	if err := k.CreateTopic(ctx, topic, 1); err != nil {
		t.Fatal(err)
	}
	if err := k.Produce(ctx, topic, 10, eventRecord); err != nil {
		t.Fatal(err)
	}
	table := tableName() + "_rows"
	addr := freeAddr(t)
	f := flags{brokers: strings.Join(k.Brokers(), ","), topic: topic, group: kbatchtest.Name(t, "g"), dsn: pgDSN,
		table: table, offsetsTable: table + "_offsets", metrics: addr, batch: 100, protocol: "classic", sessionTimeout: 6 * time.Second}
	pool, err := openPool(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	defer pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+quote(f.table)+", "+quote(f.offsetsTable)) //nolint:errcheck
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serve(runCtx, f, nil) }()
	waitFor(t, time.Minute, "the 10 records written and reported", func() bool {
		code, body := get("http://" + addr + "/metrics")
		return code == 200 && strings.Contains(body, "pg_sink_records_written_total 10") && strings.Contains(body, "kbatch_")
	})
	if code, _ := get("http://" + addr + "/readyz"); code != 200 {
		t.Errorf("/readyz answered %d, want 200", code)
	}
	if code, _ := get("http://" + addr + "/healthz"); code != 200 {
		t.Errorf("/healthz answered %d, want 200", code)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
