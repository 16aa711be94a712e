package batcher

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mustNew(t testing.TB, p Policy) *Batcher[int] {
	t.Helper()
	b, err := New[int](p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Guards against a policy that can never close a batch or that takes a
// negative size being accepted silently.
func TestNewRefusesInvalidPolicyNamingTheField(t *testing.T) {
	for _, tc := range []struct {
		name  string
		p     Policy
		field string
	}{
		{"zero max records", Policy{}, "MaxRecords"},
		{"negative max bytes", Policy{MaxRecords: 1, MaxBytes: -1}, "MaxBytes"},
		{"negative max wait", Policy{MaxRecords: 1, MaxWait: -time.Second}, "MaxWait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New[int](tc.p)
			if err == nil || !contains(err.Error(), tc.field) {
				t.Fatalf("New(%+v) = %v, want an error naming %s", tc.p, err, tc.field)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// Guards the count limit: the batch is full exactly at MaxRecords.
func TestBatchIsFullAtMaxRecords(t *testing.T) {
	b := mustNew(t, Policy{MaxRecords: 3})
	for i := range 2 {
		if b.Add(t0, i, 1) {
			t.Fatalf("full after %d items", i+1)
		}
	}
	if !b.Add(t0, 2, 1) {
		t.Fatal("not full after 3 items")
	}
	got := b.Flush()
	if len(got) != 3 || got[0] != 0 || got[2] != 2 {
		t.Fatalf("flush = %v", got)
	}
	if b.Len() != 0 || b.Bytes() != 0 {
		t.Fatalf("batcher not empty after flush: len %d bytes %d", b.Len(), b.Bytes())
	}
}

// Guards the byte limit as an upper bound: an item that would overflow the
// batch must not join it, an oversized item forms a batch of its own.
func TestByteLimitIsAnUpperBound(t *testing.T) {
	b := mustNew(t, Policy{MaxRecords: 100, MaxBytes: 10})
	if b.Add(t0, 1, 4) {
		t.Fatal("full at 4 of 10 bytes")
	}
	if !b.Fits(6) {
		t.Fatal("6 more bytes should fit in 10")
	}
	if b.Fits(7) {
		t.Fatal("7 more bytes should not fit in 10")
	}
	if !b.Add(t0, 2, 6) {
		t.Fatal("not full at exactly 10 bytes")
	}
	if got := b.Flush(); len(got) != 2 {
		t.Fatalf("flush = %v", got)
	}
	if !b.Fits(50) {
		t.Fatal("an empty batch must accept an oversized item")
	}
	if !b.Add(t0, 3, 50) {
		t.Fatal("an oversized item alone must fill the batch")
	}
}

// Guards the leading-edge window: the deadline is fixed by the first item and
// does not move as more items arrive (a trickle cannot postpone the flush).
func TestWaitIsMeasuredFromTheFirstItem(t *testing.T) {
	b := mustNew(t, Policy{MaxRecords: 100, MaxWait: time.Second})
	if _, ok := b.Deadline(); ok {
		t.Fatal("empty batch has a deadline")
	}
	b.Add(t0, 1, 1)
	for i := 1; i <= 9; i++ {
		now := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		if b.Due(now) {
			t.Fatalf("due at %v, before the window ended", now.Sub(t0))
		}
		b.Add(now, i, 1)
	}
	d, ok := b.Deadline()
	if !ok || !d.Equal(t0.Add(time.Second)) {
		t.Fatalf("deadline = %v, %v; want first item + 1s", d, ok)
	}
	if !b.Due(t0.Add(time.Second)) {
		t.Fatal("not due at first item + MaxWait")
	}
	b.Flush()
	later := t0.Add(5 * time.Second)
	b.Add(later, 1, 1)
	if d, _ := b.Deadline(); !d.Equal(later.Add(time.Second)) {
		t.Fatalf("next batch deadline = %v, want its own first item + 1s", d)
	}
}

// Guards flush on demand (revoke, close): a partial batch comes out whole and
// an empty batcher flushes nothing.
func TestFlushOnDemand(t *testing.T) {
	b := mustNew(t, Policy{MaxRecords: 10, MaxWait: time.Hour})
	if got := b.Flush(); got != nil {
		t.Fatalf("empty flush = %v", got)
	}
	b.Add(t0, 7, 1)
	b.Add(t0, 8, 1)
	got := b.Flush()
	if len(got) != 2 || got[0] != 7 || got[1] != 8 {
		t.Fatalf("flush = %v", got)
	}
	// The flushed slice belongs to the caller: later adds must not alter it.
	b.Add(t0, 9, 1)
	if got[0] != 7 {
		t.Fatal("flushed batch was overwritten by a later add")
	}
}

// Guards against MaxWait 0 being read as "flush at once".
func TestZeroWaitMeansNoTimeLimit(t *testing.T) {
	b := mustNew(t, Policy{MaxRecords: 10})
	b.Add(t0, 1, 1)
	if b.Due(t0.Add(100 * time.Hour)) {
		t.Fatal("due with MaxWait 0")
	}
}

func BenchmarkAddFlush(b *testing.B) {
	bt, _ := New[int](Policy{MaxRecords: 500, MaxBytes: 1 << 20, MaxWait: time.Second})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if !bt.Fits(100) {
			bt.Flush()
		}
		if bt.Add(t0, i, 100) {
			bt.Flush()
		}
	}
}
