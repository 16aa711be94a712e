package kafkastore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"

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
