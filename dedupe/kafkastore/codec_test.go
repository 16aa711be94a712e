package kafkastore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
)

// FuzzDecodeEntry states the changelog codec's invariants: decoding any
// bytes never panics; a value that decodes is in canonical form (encoding
// what was decoded gives the same bytes, so two writers never disagree on a
// value); and any valid entry survives encode then decode. It also checks
// that every idempotency key survives the key escaping and is never taken
// for an owner claim.
func FuzzDecodeEntry(f *testing.F) {
	f.Add(appendEntry(nil, 7, entry{attempts: 3, done: true, markers: []string{"charged", "emailed"}, expires: 1_700_000_000_000_000_000}))
	f.Add(appendEntry(nil, 0, entry{}))
	f.Add(appendEntry(nil, math.MaxInt64, entry{attempts: math.MaxInt32, expires: -1}))
	f.Add(appendClaim(nil, 1_700_000_000_000_000_000))
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0x80, 0x00, 0, 0, 0, 0})        // a non-canonical epoch
	f.Add([]byte{1, 1, 0, 0, 0, 0, 2, 1, 'a', 1, 'a'}) // a repeated marker
	f.Add([]byte("\x00kbatch-owner/x"))
	f.Add(appendRuns(nil, 7, 1, 9, []offRun{{lo: 1, hi: 2}, {lo: 4, hi: 9}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if epoch, e, err := decodeEntry(b); err == nil {
			// What this version writes of what it read is a prefix of
			// it: the newer writer's flags and extensions aside.
			again := appendEntry(nil, epoch, e)
			if n := entrySize(epoch, e); n != len(again) {
				t.Fatalf("entrySize %d, encoding has %d bytes", n, len(again))
			}
			if len(again) > len(b) || !bytes.Equal(again[:3], b[:3]) {
				t.Fatalf("decoded %x to epoch %d %+v, which encodes to %x", b, epoch, e, again)
			}
			e2epoch, e2, err := decodeEntry(again)
			if err != nil || e2epoch != epoch || e2.attempts != e.attempts || e2.done != e.done || e2.expires != e.expires || !slices.Equal(e2.markers, e.markers) {
				t.Fatalf("decoded %x to epoch %d %+v, whose encoding decodes to %d %+v (%v)", b, epoch, e, e2epoch, e2, err)
			}
		}
		if at, err := decodeClaim(b); err == nil {
			if again := appendClaim(nil, at); !bytes.Equal(again, b[:len(again)]) {
				t.Fatalf("decoded claim %x to %d, which encodes to %x", b, at, again)
			}
		}
		_, _, _ = decodeHashes(b, kindDone, func(keyHash) {})
		_, _, _ = decodeHashes(b, kindBegun, func(keyHash) {})
		var runs []offRun
		if epoch, expires, fnv, err := decodeRuns(b, func(lo, hi uint64) { runs = append(runs, offRun{lo: lo, hi: hi}) }); err == nil {
			for _, r := range runs {
				if r.lo > r.hi || r.hi > math.MaxInt64 {
					t.Fatalf("decoded %x to run %d-%d", b, r.lo, r.hi)
				}
			}
			if again := appendRuns(nil, epoch, expires, fnv, runs); len(again) > len(b) || !bytes.Equal(again, b[:len(again)]) {
				t.Fatalf("decoded runs %x to %v, which encode to %x", b, runs, again)
			}
		}

		e, epoch := entryFrom(b)
		v := appendEntry(nil, epoch, e)
		gotEpoch, got, err := decodeEntry(v)
		if err != nil {
			t.Fatalf("decoding the encoding of epoch %d %+v: %v", epoch, e, err)
		}
		if gotEpoch != epoch || got.attempts != e.attempts || got.done != e.done || got.expires != e.expires || !slices.Equal(got.markers, e.markers) {
			t.Fatalf("round trip of epoch %d %+v gave epoch %d %+v", epoch, e, gotEpoch, got)
		}

		key := string(b)
		k, claim, err := parseKey(recordKey(key))
		if err != nil || claim || k != key {
			t.Fatalf("key %q came back as %q (claim %v, err %v)", key, k, claim, err)
		}
	})
}

// entryFrom derives a valid entry and epoch from arbitrary bytes.
func entryFrom(b []byte) (entry, int64) {
	var w [24]byte
	copy(w[:], b)
	epoch := int64(binary.LittleEndian.Uint64(w[0:]) & math.MaxInt64)
	attempts := int(binary.LittleEndian.Uint32(w[8:]) & math.MaxInt32)
	expires := int64(binary.LittleEndian.Uint64(w[12:]))
	e := entry{attempts: attempts, done: w[20]&1 == 1, expires: expires}
	seen := map[string]bool{}
	for _, m := range strings.Split(string(b), "/") {
		if m != "" && !seen[m] {
			seen[m] = true
			e.markers = append(e.markers, m)
		}
	}
	return e, epoch
}

// TestDecodeEntryRefuses guards the malformed-record path: each of these
// values must be refused (and so counted and skipped by the loader), not
// read as some entry.
func TestDecodeEntryRefuses(t *testing.T) {
	valid := appendEntry(nil, 5, entry{attempts: 2, markers: []string{"m"}, expires: 10})
	cases := map[string][]byte{
		"empty":                     {},
		"unknown version":           append([]byte{2}, valid[1:]...),
		"a claim, not an entry":     appendClaim(nil, 1),
		"truncated":                 valid[:len(valid)-1],
		"a badly framed extension":  append(slices.Clone(valid), 0),
		"an extension ending early": append(slices.Clone(valid), 7, 3, 'x'),
		"non-canonical varint":      {1, 1, 0x80, 0x00, 0, 0, 0, 0},
		"empty marker":              {1, 1, 0, 0, 0, 0, 1, 0},
		"repeated marker":           {1, 1, 0, 0, 0, 0, 2, 1, 'a', 1, 'a'},
		"marker count too big":      {1, 1, 0, 0, 0, 0, 100, 1, 'a'},
		"attempts out of range":     binary.AppendUvarint([]byte{1, 1, 0, 0}, math.MaxInt32+1),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if epoch, e, err := decodeEntry(b); err == nil {
				t.Fatalf("decodeEntry(%x) = epoch %d %+v, want an error", b, epoch, e)
			}
		})
	}
}

// TestEntryFromANewerVersionIsRead guards rolling upgrades: the codec
// refused unknown flags and trailing bytes, so an older member skipped (as
// malformed) every entry a newer member wrote with a field it did not know.
// The golden value below is such an entry: an unknown flag bit, then two
// extension fields after the markers.
func TestEntryFromANewerVersionIsRead(t *testing.T) {
	golden := []byte{
		0x01, 0x01, // version 1, an entry
		0x05,            // epoch 5
		0x81,            // flags: done, and an unknown bit
		0x03,            // attempts 3
		0x14,            // expires 10
		0x01, 0x01, 'm', // one marker, "m"
		0x07, 0x03, 'x', 'y', 'z', // extension: tag 7, 3 bytes
		0xac, 0x02, 0x00, // extension: tag 300, empty
	}
	epoch, e, err := decodeEntry(golden)
	if err != nil {
		t.Fatalf("decodeEntry of a newer version's entry: %v", err)
	}
	if epoch != 5 || !e.done || e.attempts != 3 || e.expires != 10 || !slices.Equal(e.markers, []string{"m"}) {
		t.Fatalf("decoded epoch %d %+v, want epoch 5, done, attempts 3, expires 10, markers [m]", epoch, e)
	}
	claim := append(appendClaim(nil, 42), 0x09, 0x01, 0xff)
	if at, err := decodeClaim(claim); err != nil || at != 42 {
		t.Fatalf("decodeClaim of a newer version's claim: %d, %v", at, err)
	}
}

// TestFallbackKeysAreSpeltOutNotHashed guards the cheap form of fallback
// keys: two fallback keys of one partition must never share a hash (one
// would be skipped as the other), fallback keys of other partitions or
// topics must differ too, and any other spelling goes through SHA-256.
func TestFallbackKeysAreSpeltOutNotHashed(t *testing.T) {
	seen := map[keyHash]string{}
	for _, topic := range []string{"orders", "orders/0", "a"} {
		for p := int32(0); p < 3; p++ {
			for o := int64(0); o < 300; o++ {
				k := dedupe.OffsetKey(topic, p, o)
				h := hashKey(k)
				if prev, dup := seen[h]; dup {
					t.Fatalf("%q and %q share a hash", prev, k)
				}
				seen[h] = k
			}
		}
	}
	for _, k := range []string{"\x00o:orders/0/05", "\x00o:orders/0/+5", "\x00o:orders/0/", "order-5"} {
		if sum := sha256.Sum256([]byte(k)); hashKey(k) != keyHash(sum[:keyHashSize]) {
			t.Errorf("%q is not hashed with SHA-256", k)
		}
	}
}

// Golden changelog values, as written by this version (runs) and by the
// version before it (a done record of hashes): partition "orders"/3, epoch
// 7, expiring at 1.7e18 Unix nanoseconds.
const (
	goldenRuns = "0105078080d0e2c6bfce972fe18c55286f282df903050402009f02e707"
	// The hashes of "order-1" and of the fallback key of offset 42.
	goldenDoneHashes = "0103078080d0e2c6bfce972f020bafe22156d2698c143b86040446d366000000000000002ae18c55286f282df9"
)

// TestRunsRecordAcrossVersions guards the upgrade path of the runs record
// of fallback keys done: its encoding does not change unnoticed; a reader
// knowing only the done and begun kinds (the version before it) refuses it
// under a done key, so that it skips it as malformed rather than reading
// wrong keys done; and this version reads both it and the older done
// record.
func TestRunsRecordAcrossVersions(t *testing.T) {
	const expires = 1_700_000_000_000_000_000
	p := dedupe.Partition{Topic: "orders", Partition: 3}
	ps := newPartition(p, "orders.kbatch-dedupe")
	runs := []offRun{{lo: 5, hi: 9}, {lo: 12, hi: 12}, {lo: 300, hi: 1299}}
	if got := hex.EncodeToString(appendRuns(nil, 7, expires, ps.offFNV, runs)); got != goldenRuns {
		t.Fatalf("runs record encodes as %s, golden %s", got, goldenRuns)
	}
	value, _ := hex.DecodeString(goldenRuns)
	if _, _, err := decodeHashes(value, kindDone, nil); err == nil {
		t.Fatal("the older reader's decoding of a done record accepts a runs record")
	}
	var got []offRun
	epoch, exp, fnv, err := decodeRuns(value, func(lo, hi uint64) { got = append(got, offRun{lo: lo, hi: hi}) })
	if err != nil || epoch != 7 || exp != expires || fnv != ps.offFNV || !slices.Equal(got, runs) {
		t.Fatalf("decodeRuns: epoch %d, expires %d, fnv %x, runs %v, %v", epoch, exp, fnv, got, err)
	}

	s := &Store{opts: Options{Brokers: []string{"x"}, Group: "g"}.withDefaults()}
	old, _ := hex.DecodeString(goldenDoneHashes)
	s.apply(ps, &kgo.Record{Key: []byte(donePrefix + "7/1"), Value: old, Offset: 10}, expires-1, nil)
	s.apply(ps, &kgo.Record{Key: []byte(donePrefix + "7/2"), Value: value, Offset: 11}, expires-1, nil)
	if n := s.malformed.Load(); n != 0 {
		t.Fatalf("%d records read as malformed", n)
	}
	for _, c := range []struct {
		key  string
		done bool
	}{
		{"order-1", true}, {"order-2", false},
		{dedupe.OffsetKey(p.Topic, p.Partition, 42), true},
		{dedupe.OffsetKey(p.Topic, p.Partition, 4), false},
		{dedupe.OffsetKey(p.Topic, p.Partition, 5), true},
		{dedupe.OffsetKey(p.Topic, p.Partition, 9), true},
		{dedupe.OffsetKey(p.Topic, p.Partition, 10), false},
		{dedupe.OffsetKey(p.Topic, p.Partition, 12), true},
		{dedupe.OffsetKey(p.Topic, p.Partition, 299), false},
		{dedupe.OffsetKey(p.Topic, p.Partition, 1299), true},
		{dedupe.OffsetKey(p.Topic, p.Partition, 1300), false},
		{dedupe.OffsetKey(p.Topic, p.Partition+1, 5), false},
	} {
		e, _ := s.live(ps, c.key, expires-1)
		if e.done != c.done {
			t.Errorf("%q: done %v, want %v", c.key, e.done, c.done)
		}
	}
}

// TestDecodeRunsRefuses guards the runs record's decoding against values
// that would make wrong runs: cut short, running past the largest offset,
// or with a count larger than the value.
func TestDecodeRunsRefuses(t *testing.T) {
	good := appendRuns(nil, 7, 1, 9, []offRun{{lo: 1, hi: 2}})
	for name, v := range map[string][]byte{
		"cut short":               good[:len(good)-1],
		"no fnv":                  good[:5],
		"past the largest offset": appendRuns(nil, 7, 1, 9, []offRun{{lo: math.MaxInt64 - 1, hi: math.MaxInt64}, {lo: math.MaxUint64 - 1, hi: math.MaxUint64 - 1}}),
		"too long":                appendRuns(nil, 7, 1, 9, []offRun{{lo: 0, hi: math.MaxInt64 + 1}}),
		"count":                   append(slices.Clone(good[:len(good)-3]), 9, 1, 1),
	} {
		if _, _, _, err := decodeRuns(v, func(lo, hi uint64) { t.Errorf("%s: run %d-%d read", name, lo, hi) }); err == nil {
			t.Errorf("%s: %x decoded", name, v)
		}
	}
}
