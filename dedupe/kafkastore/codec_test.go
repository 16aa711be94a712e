package kafkastore

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"
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
			again := appendEntry(nil, epoch, e)
			if !bytes.Equal(again, b) {
				t.Fatalf("decoded %x to epoch %d %+v, which encodes to %x", b, epoch, e, again)
			}
			if n := entrySize(epoch, e); n != len(b) {
				t.Fatalf("entrySize %d, encoding has %d bytes", n, len(b))
			}
		}
		if at, err := decodeClaim(b); err == nil {
			if again := appendClaim(nil, at); !bytes.Equal(again, b) {
				t.Fatalf("decoded claim %x to %d, which encodes to %x", b, at, again)
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
		"empty":                 {},
		"unknown version":       append([]byte{2}, valid[1:]...),
		"a claim, not an entry": appendClaim(nil, 1),
		"truncated":             valid[:len(valid)-1],
		"trailing bytes":        append(slices.Clone(valid), 0),
		"unknown flag":          {1, 1, 0, 2, 0, 0, 0},
		"non-canonical varint":  {1, 1, 0x80, 0x00, 0, 0, 0, 0},
		"empty marker":          {1, 1, 0, 0, 0, 0, 1, 0},
		"repeated marker":       {1, 1, 0, 0, 0, 0, 2, 1, 'a', 1, 'a'},
		"marker count too big":  {1, 1, 0, 0, 0, 0, 100, 1, 'a'},
		"attempts out of range": binary.AppendUvarint([]byte{1, 1, 0, 0}, math.MaxInt32+1),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if epoch, e, err := decodeEntry(b); err == nil {
				t.Fatalf("decodeEntry(%x) = epoch %d %+v, want an error", b, epoch, e)
			}
		})
	}
}
