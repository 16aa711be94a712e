package kafkastore

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/kbatch/kbatch/dedupe"
)

// TestNotDoneNeverHidesADoneKey guards the shortcut that answers "not
// done" for a fallback key above every one done without a probe of the
// done map: whatever order keys are done in (fallback keys of this and
// other partitions, keys of any other kind), a key in done is never
// reported not done, and a fallback key above them all is.
func TestNotDoneNeverHidesADoneKey(t *testing.T) {
	p := dedupe.Partition{Topic: "orders", Partition: 2}
	ps := newPartition(p, "changelog")
	rng := rand.New(rand.NewPCG(3, 4))
	var top int64 = -1
	var done []keyHash
	for i := range 5000 {
		var key string
		switch rng.IntN(4) {
		case 0:
			key = "order-" + strconv.Itoa(rng.IntN(1000))
		case 1:
			key = dedupe.OffsetKey(p.Topic, p.Partition+1, rng.Int64N(10000))
		default:
			o := rng.Int64N(10000)
			key = dedupe.OffsetKey(p.Topic, p.Partition, o)
			top = max(top, o)
		}
		ps.setDone(hashKey(key), int64(i+1))
		done = append(done, hashKey(key))
		for _, h := range done {
			if _, ok := ps.doneExp(h); !ok {
				t.Fatalf("after %d keys: %x was done but is not held", i+1, h)
			}
			if ps.notDone(h) {
				t.Fatalf("after %d keys: %x is done but reported not done", i+1, h)
			}
		}
		above := hashKey(dedupe.OffsetKey(p.Topic, p.Partition, top+1+rng.Int64N(5)))
		if !ps.notDone(above) {
			t.Fatalf("after %d keys: offset above %d not known as not done", i+1, top)
		}
	}
	if ps.notDone(hashKey("order-1")) {
		t.Fatal("another kind of key reported not done without a look")
	}
}

// TestPartitionHashIsHashKey guards the partition's shortcut for its own
// fallback keys: it must give every key the hash hashKey gives it, which
// is what the changelog holds.
func TestPartitionHashIsHashKey(t *testing.T) {
	p := dedupe.Partition{Topic: "orders", Partition: 12}
	ps := newPartition(p, "changelog")
	prefix := dedupe.OffsetKey(p.Topic, p.Partition, 0)
	prefix = prefix[:len(prefix)-1]
	keys := []string{"", "k", "order-42", prefix, prefix + "-1", prefix + "007", prefix + "1/2", prefix + "x",
		prefix + "9223372036854775807", prefix + "9223372036854775808", prefix[1:] + "5",
		dedupe.OffsetKey(p.Topic, p.Partition+1, 5), dedupe.OffsetKey(p.Topic+"x", p.Partition, 5),
		dedupe.OffsetKey("orders/1", 2, 5)}
	for o := range int64(300) {
		keys = append(keys, dedupe.OffsetKey(p.Topic, p.Partition, o*7919))
	}
	for _, k := range keys {
		if got, want := ps.hash(k), hashKey(k); got != want {
			t.Errorf("hash(%q) = %x, hashKey gives %x", k, got, want)
		}
	}
}
