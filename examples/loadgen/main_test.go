package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/kbatchtest"
)

// Guards the contract with orders-etl: a JSON order keyed and
// idempotency-keyed by its id, with a positive amount unless it is meant
// to be invalid (then orders-etl dead-letters it).
func TestNewOrderIsWhatOrdersETLReads(t *testing.T) {
	for _, invalid := range []bool{false, true} {
		r := newOrder("run1", 42, invalid)
		var o struct {
			Order       string `json:"order"`
			AmountCents int64  `json:"amount_cents"`
		}
		if err := json.Unmarshal(r.Value, &o); err != nil {
			t.Fatalf("value %q is not JSON: %v", r.Value, err)
		}
		if o.Order != "order-run1-42" || string(r.Key) != o.Order {
			t.Errorf("order id %q, key %q; want order-run1-42 for both", o.Order, r.Key)
		}
		if len(r.Headers) != 1 || r.Headers[0].Key != dedupe.DefaultHeader || string(r.Headers[0].Value) != o.Order {
			t.Errorf("headers %v; want %s=%s", r.Headers, dedupe.DefaultHeader, o.Order)
		}
		if positive := o.AmountCents > 0; positive == invalid {
			t.Errorf("invalid=%v gave amount %d", invalid, o.AmountCents)
		}
	}
}

// Guards -count and -invalid-every end to end: exactly the asked number of
// orders arrives, on the topic loadgen creates.
func TestRunProducesTheCountAskedFor(t *testing.T) {
	k := kbatchtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := kbatchtest.Name(t, "orders")
	err := run(ctx, config{
		brokers: k.Brokers()[0], topic: topic, partitions: 3,
		rate: 2000, invalidEvery: 10, count: 100, report: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	end, err := k.EndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range end {
		n += e
	}
	if len(end) != 3 || n != 100 {
		t.Fatalf("end offsets %v: want 100 orders over 3 partitions", end)
	}
}
