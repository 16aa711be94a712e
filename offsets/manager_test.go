package offsets

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeCommitter records commits and can refuse partitions as fenced.
type fakeCommitter struct {
	mu      sync.Mutex
	commits []map[Partition]Offset
	fence   map[Partition]bool
	fail    error
	block   chan struct{} // if set, Commit waits on it
	entered chan struct{}
}

func (f *fakeCommitter) commit(ctx context.Context, offs map[Partition]Offset) (map[Partition]error, error) {
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	cp := make(map[Partition]Offset, len(offs))
	perr := map[Partition]error{}
	for p, o := range offs {
		if f.fence[p] {
			perr[p] = errors.Join(ErrFenced, errors.New("ILLEGAL_GENERATION"))
			continue
		}
		cp[p] = o
	}
	f.commits = append(f.commits, cp)
	return perr, nil
}

func (f *fakeCommitter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.commits)
}

var p0, p1 = Partition{"t", 0}, Partition{"t", 1}

func newManager(t *testing.T, f *fakeCommitter, pol Policy) *Manager {
	t.Helper()
	m, err := NewManager(Config{Policy: pol, Commit: f.commit})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Guards invariant 3: commits follow the window, never one per batch. 100
// batches of 100 records with EveryRecords 2500 make 4 commits, not 100.
func TestCommitsFollowTheRecordWindow(t *testing.T) {
	f := &fakeCommitter{}
	m := newManager(t, f, Policy{EveryRecords: 2500})
	m.Assign(p0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	for i := int64(0); i < 100; i++ {
		must(t, m.Begin(p0, i*100, i*100+99, 0))
		must(t, m.Done(p0, i*100, i*100+99, 100))
		if (i+1)%25 == 0 { // wait until the committer caught up with the kick
			waitFor(t, func() bool { return f.count() == int(i+1)/25 })
		}
	}
	cancel()
	<-done
	if got := f.count(); got != 4 {
		t.Fatalf("commits = %d, want 4", got)
	}
	if got := f.commits[3][p0].At; got != 10000 {
		t.Fatalf("last commit at %d, want 10000", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Guards the interval trigger: it commits only when a watermark moved.
func TestIntervalCommitsOnlyWithProgress(t *testing.T) {
	f := &fakeCommitter{}
	m := newManager(t, f, Policy{Interval: 5 * time.Millisecond})
	m.Assign(p0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	must(t, m.Begin(p0, 0, 9, 0))
	must(t, m.Done(p0, 0, 9, 10))
	waitFor(t, func() bool { return f.count() == 1 })
	time.Sleep(50 * time.Millisecond) // ten idle intervals
	cancel()
	<-done
	if got := f.count(); got != 1 {
		t.Fatalf("commits = %d after idle intervals, want 1", got)
	}
}

// Guards invariant 2: a pending batch holds the commit back even when later
// batches of the same partition completed.
func TestCommitNeverPassesAPendingBatch(t *testing.T) {
	f := &fakeCommitter{}
	m := newManager(t, f, Policy{EveryRecords: 1})
	m.Assign(p0)
	must(t, m.Begin(p0, 0, 9, 0))
	must(t, m.Begin(p0, 10, 19, 0))
	must(t, m.Done(p0, 10, 19, 10))
	must(t, m.Commit(context.Background()))
	if f.count() != 0 {
		t.Fatalf("committed %v past pending [0,9]", f.commits)
	}
	must(t, m.Done(p0, 0, 9, 10))
	must(t, m.Commit(context.Background()))
	if f.count() != 1 || f.commits[0][p0].At != 20 {
		t.Fatalf("commits = %v, want one at 20", f.commits)
	}
}

// Guards invariant 4 (the known franz-go trap): once Forget returns, no commit
// for the partition is in flight or sent, even if a commit was being built
// concurrently.
func TestForgetWaitsForTheCommitInFlightAndExcludesThePartition(t *testing.T) {
	f := &fakeCommitter{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	m := newManager(t, f, Policy{EveryRecords: 1})
	m.Assign(p0)
	m.Assign(p1)
	must(t, m.Begin(p0, 0, 9, 0))
	must(t, m.Done(p0, 0, 9, 10))
	commitDone := make(chan error)
	go func() { commitDone <- m.Commit(context.Background()) }()
	<-f.entered // the commit is in flight
	forgot := make(chan struct{})
	go func() { m.Forget(p0); close(forgot) }()
	select {
	case <-forgot:
		t.Fatal("Forget returned while a commit naming the partition was in flight")
	case <-time.After(20 * time.Millisecond):
	}
	close(f.block)
	must(t, <-commitDone)
	<-forgot
	// A completion arriving late for the forgotten partition is ignored and
	// no later commit names it.
	must(t, m.Done(p0, 0, 9, 10))
	must(t, m.Begin(p1, 0, 0, 0))
	must(t, m.Done(p1, 0, 0, 1))
	f.block, f.entered = nil, nil
	must(t, m.Commit(context.Background()))
	for i, c := range f.commits[1:] {
		if _, ok := c[p0]; ok {
			t.Fatalf("commit %d after Forget names the forgotten partition: %v", i+1, c)
		}
	}
}

// Guards revoke: CommitAndForget commits the final watermark, then nothing
// more for that partition.
func TestCommitAndForgetCommitsTheFinalWatermark(t *testing.T) {
	f := &fakeCommitter{}
	m := newManager(t, f, Policy{EveryRecords: 1 << 30})
	m.Assign(p0)
	m.Assign(p1)
	must(t, m.Begin(p0, 0, 41, 7))
	must(t, m.Done(p0, 0, 41, 42))
	must(t, m.Begin(p1, 0, 5, 0))
	must(t, m.Done(p1, 0, 5, 6))
	must(t, m.CommitAndForget(context.Background(), p0))
	if f.count() != 1 {
		t.Fatalf("commits = %d", f.count())
	}
	got := f.commits[0]
	if len(got) != 1 || got[p0] != (Offset{At: 42, Epoch: 7}) {
		t.Fatalf("revoke commit = %v, want only t/0 at 42 epoch 7", got)
	}
	if m.Owned(p0) {
		t.Fatal("partition still owned after CommitAndForget")
	}
}

// Guards invariant 4's last clause: a fenced commit forgets the partition and
// reports it instead of retrying into the new owner's range.
func TestFencedCommitForgetsAndReports(t *testing.T) {
	f := &fakeCommitter{fence: map[Partition]bool{p0: true}}
	var reported []Fenced
	m, err := NewManager(Config{Policy: Policy{EveryRecords: 1}, Commit: f.commit, OnFenced: func(fs []Fenced) { reported = fs }})
	must(t, err)
	m.Assign(p0)
	m.Assign(p1)
	for _, p := range []Partition{p0, p1} {
		must(t, m.Begin(p, 0, 9, 0))
		must(t, m.Done(p, 0, 9, 10))
	}
	must(t, m.Begin(p0, 10, 19, 0)) // pending when the fence comes
	if err := m.Commit(context.Background()); !errors.Is(err, ErrFenced) {
		t.Fatalf("commit error = %v, want ErrFenced", err)
	}
	if len(reported) != 1 || reported[0] != (Fenced{Partition: p0, Resume: 10}) {
		t.Fatalf("reported = %v, want t/0 to resume at 10", reported)
	}
	if m.Owned(p0) || !m.Owned(p1) {
		t.Fatal("fenced partition should be forgotten, the other kept")
	}
	if at, ok := m.Committed(p1); !ok || at != 10 {
		t.Fatalf("t/1 committed = %d %v", at, ok)
	}
}

// Guards a failed request: nothing is marked committed, the next window
// retries.
func TestFailedCommitIsRetriedNextWindow(t *testing.T) {
	f := &fakeCommitter{fail: errors.New("broker down")}
	m := newManager(t, f, Policy{EveryRecords: 1})
	m.Assign(p0)
	must(t, m.Begin(p0, 0, 9, 0))
	must(t, m.Done(p0, 0, 9, 10))
	if m.Commit(context.Background()) == nil {
		t.Fatal("want an error")
	}
	f.fail = nil
	must(t, m.Commit(context.Background()))
	if f.count() != 1 || f.commits[0][p0].At != 10 {
		t.Fatalf("commits = %v", f.commits)
	}
}

func TestNewManagerRefusesInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no commit func", Config{Policy: Policy{EveryRecords: 1}}},
		{"negative every", Config{Policy: Policy{EveryRecords: -1}, Commit: (&fakeCommitter{}).commit}},
		{"no trigger", Config{Commit: (&fakeCommitter{}).commit}},
	} {
		if _, err := NewManager(tc.cfg); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// Guards the lease: a worker of an earlier assignment that finishes after
// the partition was assigned again must neither begin nor complete records
// of the new assignment; completing under the current lease reports the
// watermark.
func TestAnOlderLeaseCannotCompleteRecordsOfTheCurrentAssignment(t *testing.T) {
	m := newManager(t, &fakeCommitter{}, Policy{EveryRecords: 1 << 30})
	old := m.Assign(p0)
	must(t, m.BeginLeased(p0, old, 0, 9, 0))
	cur := m.Assign(p0) // revoked, then assigned back
	if cur == old {
		t.Fatal("Assign gave the same lease twice")
	}
	must(t, m.BeginLeased(p0, cur, 0, 9, 0))
	if err := m.BeginLeased(p0, old, 10, 19, 0); err == nil {
		t.Fatal("Begin under the old lease accepted")
	}
	if _, moved, err := m.DoneLeased(p0, old, 0, 9, 10); err != nil || moved {
		t.Fatalf("Done under the old lease: moved %v, err %v; want ignored", moved, err)
	}
	if _, ok := m.Watermark(p0); ok {
		t.Fatal("the old lease's Done moved the current assignment's watermark")
	}
	wm, moved, err := m.DoneLeased(p0, cur, 0, 9, 10)
	if err != nil || !moved || wm.At != 10 {
		t.Fatalf("Done under the current lease = %v, %v, %v; want watermark 10", wm, moved, err)
	}
}

// Guards the start commit: a partition started at an offset its owner's sink
// gave is committed there even when no record of it completes (lag tools
// read Kafka's commit), once, and not under an older lease.
func TestAStartOffsetIsCommittedWithoutRecords(t *testing.T) {
	f := &fakeCommitter{}
	m := newManager(t, f, Policy{EveryRecords: 1 << 30})
	old := m.Assign(p0)
	cur := m.Assign(p0)
	m.StartLeased(p0, old, 7) // an older assignment's start: ignored
	m.StartLeased(p0, cur, 5000)
	must(t, m.Commit(context.Background()))
	if f.count() != 1 || f.commits[0][p0] != (Offset{At: 5000, Epoch: -1}) {
		t.Fatalf("commits %v, want t/0 at 5000", f.commits)
	}
	must(t, m.Commit(context.Background()))
	if f.count() != 1 {
		t.Fatalf("the start was committed again: %v", f.commits)
	}
	must(t, m.Begin(p0, 5000, 5009, 3))
	must(t, m.Done(p0, 5000, 5009, 10))
	must(t, m.CommitAndForget(context.Background(), p0))
	if f.count() != 2 || f.commits[1][p0] != (Offset{At: 5010, Epoch: 3}) {
		t.Fatalf("commits %v, want t/0 at 5010 second", f.commits)
	}
}
