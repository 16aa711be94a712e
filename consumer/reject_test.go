package consumer

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Guards Reject's contract where a handler's unit test sees it: the reason
// is recorded for the record (Rejected), bad indexes and nil reasons are
// refused, and without a dead-letter topic (the simple path) Reject says so
// instead of dropping the record silently.
func TestRejectRecordsTheReasonAndRefusesWhatItCannotDo(t *testing.T) {
	recs := []*kgo.Record{{Offset: 0}, {Offset: 1}, {Offset: 2}}
	b := NewTestBatch("orders", 0, recs, nil)
	bad := errors.New("malformed")
	if err := b.Reject(1, bad); err != nil {
		t.Fatalf("Reject: %v", err)
	}
	if got := b.Rejected(1); !errors.Is(got, bad) {
		t.Errorf("Rejected(1) = %v, want the reason", got)
	}
	if b.Rejected(0) != nil || b.Rejected(2) != nil || b.Rejected(7) != nil {
		t.Errorf("records not rejected report a reason")
	}
	if err := b.Reject(3, bad); err == nil {
		t.Errorf("Reject of an index out of range returned nil")
	}
	if err := b.Reject(0, nil); err == nil {
		t.Errorf("Reject with a nil reason returned nil")
	}
	simple := &Batch{Records: recs}
	if err := simple.Reject(0, bad); !errors.Is(err, ErrRejectNeedsDeadLetter) {
		t.Errorf("Reject without a dead-letter topic: %v, want ErrRejectNeedsDeadLetter", err)
	}
}
