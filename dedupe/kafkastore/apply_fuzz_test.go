package kafkastore

import (
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
)

// FuzzApplyChangelogRecord states what folding one changelog record into a
// partition may do, whatever the record holds (a zombie's write, another
// version's, or bytes someone with WRITE on the changelog put there): apply
// never panics; the highest epoch seen never goes down, and no record moves
// it past the record's own offset (an owner's epoch is the offset of its
// claim, which comes before every record the owner writes), or one bad
// record would fence every later owner of the partition; a record that is
// not counted malformed or fenced and carries an entry leaves that entry in
// the map under its idempotency key.
func FuzzApplyChangelogRecord(f *testing.F) {
	const now = 1_700_000_000_000_000_000
	value := appendEntry(nil, 7, entry{attempts: 2, markers: []string{"charged"}, expires: now + 1})
	f.Add([]byte("order-1"), value, false, []byte(nil), int64(9))
	f.Add([]byte("order-1"), []byte(nil), true, []byte("7"), int64(9))
	f.Add([]byte("order-1"), []byte(nil), true, []byte("9223372036854775807"), int64(9)) // a tombstone claiming a later epoch
	f.Add([]byte("\x00kbatch-owner/abc"), appendClaim(nil, now), false, []byte(nil), int64(12))
	f.Add([]byte("\x00kbatch-owner/abc"), []byte(nil), true, []byte("+8"), int64(12))
	f.Add([]byte("\x00\x00"), value, false, []byte(nil), int64(8))
	f.Add([]byte("\x00x"), value, false, []byte(nil), int64(8))
	f.Fuzz(func(t *testing.T, key, value []byte, tombstone bool, epochHdr []byte, offset int64) {
		if offset < 0 {
			return // the broker never hands out a negative offset
		}
		s := &Store{opts: Options{Brokers: []string{"x"}, Group: "g"}.withDefaults()}
		const cur = 5
		ps := newPartition(dedupe.Partition{Topic: "t"}, "t.kbatch-dedupe")
		ps.cur = cur
		r := &kgo.Record{Key: key, Value: value, Offset: offset}
		if tombstone {
			r.Value = nil
		} else if r.Value == nil {
			r.Value = []byte{}
		}
		if epochHdr != nil {
			r.Headers = []kgo.RecordHeader{{Key: epochHeader, Value: epochHdr}}
		}
		claims := map[string]int64{}
		s.apply(ps, r, now, claims)

		if ps.cur < cur {
			t.Fatalf("the highest epoch went down from %d to %d", cur, ps.cur)
		}
		if ps.cur > max(cur, offset) {
			t.Fatalf("a record at offset %d raised the epoch to %d (key %q, value %x, epoch header %q)", offset, ps.cur, key, r.Value, epochHdr)
		}
		if s.malformed.Load() > 0 || s.fenced.Load() > 0 || s.expired.Load() > 0 || r.Value == nil {
			return
		}
		k, claim, err := parseKey(key)
		if err != nil {
			t.Fatalf("key %q was applied but does not parse: %v", key, err)
		}
		if claim {
			if _, ok := claims[string(key)]; !ok {
				t.Fatalf("claim %q applied but not collected", key)
			}
			return
		}
		epoch, want, err := decodeEntry(r.Value)
		if err != nil {
			t.Fatalf("value %x was applied but does not decode: %v", r.Value, err)
		}
		if want.done {
			// A done key keeps its hash and expiry only.
			if _, ok := ps.doneExp(ps.hash(k)); !ok || ps.notDone(ps.hash(k)) {
				t.Fatalf("done entry of %q (epoch %d) not applied as done", k, epoch)
			}
			if _, ok := ps.m[k]; ok {
				t.Fatalf("done entry of %q (epoch %d) left in the map", k, epoch)
			}
			return
		}
		got, ok := ps.m[k]
		if !ok || got.attempts != want.attempts || got.done != want.done || got.expires != want.expires || len(got.markers) != len(want.markers) {
			t.Fatalf("entry of %q (epoch %d) applied as %+v (present %v), want %+v", k, epoch, got, ok, want)
		}
	})
}

// TestTombstoneEpochFromAnotherVersion guards the tombstone header parser:
// a decimal epoch is read, anything else is refused rather than read as 0
// (which would let a zombie's tombstone pass as the first owner's).
func TestTombstoneEpochFromAnotherVersion(t *testing.T) {
	for v, want := range map[string]int64{"0": 0, "42": 42, strconv.FormatInt(1<<62, 10): 1 << 62} {
		got, err := tombstoneEpoch(&kgo.Record{Headers: []kgo.RecordHeader{{Key: epochHeader, Value: []byte(v)}}})
		if err != nil || got != want {
			t.Errorf("tombstoneEpoch(%q) = %d, %v; want %d", v, got, err, want)
		}
	}
	for _, v := range []string{"", "-1", "x", "1e3", "99999999999999999999", " 1"} {
		if got, err := tombstoneEpoch(&kgo.Record{Headers: []kgo.RecordHeader{{Key: epochHeader, Value: []byte(v)}}}); err == nil {
			t.Errorf("tombstoneEpoch(%q) = %d, want an error", v, got)
		}
	}
	if _, err := tombstoneEpoch(&kgo.Record{}); err == nil {
		t.Error("a tombstone without the epoch header was accepted")
	}
}
