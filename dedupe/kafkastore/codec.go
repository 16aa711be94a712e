package kafkastore

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/internal/offkey"
)

// The changelog's record layout.
//
// Keys: an idempotency key is stored as itself, unless it is empty or starts
// with a NUL byte; then it is stored as "\x00\x00" followed by the key. Keys
// starting with one NUL and then anything else are reserved: owner claims
// use claimPrefix followed by a random id, so that every claim is a key of
// its own and compaction never removes one in favour of a later one.
//
// Values, version 1 (varints are canonical, in encoding/binary's format):
//
//	entry: 0x01 0x01 uvarint(epoch) flags uvarint(attempts) varint(expires) uvarint(n) n * (uvarint(len) marker) ext
//	claim: 0x01 0x02 varint(claimed at) ext
//	done:  0x01 0x03 uvarint(epoch) varint(expires) uvarint(n) n * hash ext
//	begun: 0x01 0x04 uvarint(epoch) varint(expires) uvarint(n) n * hash ext
//	runs:  0x01 0x05 uvarint(epoch) varint(expires) fnv uvarint(n) n * (uvarint(gap) uvarint(len-1)) ext
//
// done and begun records hold the keys of one Done or one Begin (those
// begun for the first time) by hash, under keys of their own (donePrefix,
// begunPrefix followed by the writer's epoch and a sequence number). A
// runs record holds the fallback keys of one Done of the input partition
// whose topic and partition hash to fnv (8 bytes, the last 8 of their
// hashes), as runs of offsets in increasing order: a run starts gap
// offsets after the end of the one before (the first: at offset gap) and
// holds len offsets. It goes under a donePrefix key too; a reader that
// knows only kinds 3 and 4 reports it as malformed and skips it. Under a
// begunPrefix key, a runs record holds the fallback keys of one first
// delivery (BeginOffsets); a reader that knows runs only under donePrefix
// reports it as malformed and skips it, so that during a rolling upgrade
// such a reader takes those keys' first delivery for not counted: a record
// may be handed out once more before Retry.MaxAttempts, never skipped.
//
// flags: 0x01 done; expires and claimed at are Unix nanoseconds (0: no
// expiry); hash is keyHashSize bytes (see hashKey).
//
// Forward compatibility: version 1 only ever grows. A newer writer appends
// extension fields (ext: zero or more uvarint(tag) uvarint(len) len bytes)
// and may set flags that are safe to ignore; a reader skips extension
// fields and flags it does not know, so that during a rolling upgrade an
// older member reads a newer one's entries with the fields it knows. A
// change that an older reader must not read as version 1 takes a new version
// byte, which such a reader reports as malformed and skips. A value ending
// early, a badly framed extension, an unknown version or kind, a
// non-canonical varint, an empty or repeated marker is malformed.
//
// Tombstones (nil values) delete a key; they carry their writer's epoch in
// the header epochHeader, in decimal. A claim carries in the header
// baseHeader the end offset of the changelog partition its writer read
// before writing it (see Store.Assign).
const (
	valueVersion byte = 1
	kindEntry    byte = 1
	kindClaim    byte = 2
	kindDone     byte = 3
	kindBegun    byte = 4
	kindRuns     byte = 5
	flagDone     byte = 0x01

	claimPrefix = "\x00kbatch-owner/"
	donePrefix  = "\x00kbatch-done/"
	begunPrefix = "\x00kbatch-begun/"
	epochHeader = "kbatch-epoch"
	baseHeader  = "kbatch-base"
)

// entry is a dedupe.Entry as the store keeps it. markers is never changed in
// place once stored: a new marker makes a new slice.
type entry struct {
	attempts int
	done     bool
	markers  []string
	expires  int64 // Unix nanoseconds; 0: no expiry
}

var errTruncated = errors.New("value ends early")

// appendEntry appends the encoding of e written by the owner of epoch.
func appendEntry(dst []byte, epoch int64, e entry) []byte {
	dst = append(dst, valueVersion, kindEntry)
	dst = binary.AppendUvarint(dst, uint64(epoch))
	var flags byte
	if e.done {
		flags |= flagDone
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(e.attempts))
	dst = binary.AppendVarint(dst, e.expires)
	dst = binary.AppendUvarint(dst, uint64(len(e.markers)))
	for _, m := range e.markers {
		dst = binary.AppendUvarint(dst, uint64(len(m)))
		dst = append(dst, m...)
	}
	return dst
}

// entrySize is the length of appendEntry's output, to size buffers.
func entrySize(epoch int64, e entry) int {
	n := 3 + uvarintLen(uint64(epoch)) + uvarintLen(uint64(e.attempts)) + varintLen(e.expires) + uvarintLen(uint64(len(e.markers)))
	for _, m := range e.markers {
		n += uvarintLen(uint64(len(m))) + len(m)
	}
	return n
}

// decodeEntry decodes an entry value.
func decodeEntry(b []byte) (epoch int64, e entry, err error) {
	b, err = header(b, kindEntry)
	if err != nil {
		return 0, entry{}, err
	}
	u, b, err := uvarint(b)
	if err != nil {
		return 0, entry{}, fmt.Errorf("epoch: %w", err)
	}
	if u > math.MaxInt64 {
		return 0, entry{}, fmt.Errorf("epoch %d out of range", u)
	}
	epoch = int64(u)
	if len(b) == 0 {
		return 0, entry{}, errTruncated
	}
	flags := b[0]
	b = b[1:]
	// Flags this version does not know are a newer writer's, safe to ignore.
	e.done = flags&flagDone != 0
	u, b, err = uvarint(b)
	if err != nil {
		return 0, entry{}, fmt.Errorf("attempts: %w", err)
	}
	if u > math.MaxInt32 {
		return 0, entry{}, fmt.Errorf("attempts %d out of range", u)
	}
	e.attempts = int(u)
	if e.expires, b, err = varint(b); err != nil {
		return 0, entry{}, fmt.Errorf("expires: %w", err)
	}
	n, b, err := uvarint(b)
	if err != nil {
		return 0, entry{}, fmt.Errorf("marker count: %w", err)
	}
	if n > uint64(len(b)/2) { // each marker takes at least two bytes
		return 0, entry{}, fmt.Errorf("marker count %d exceeds the value", n)
	}
	if n > 0 {
		e.markers = make([]string, 0, n)
	}
	for range n {
		l, rest, err := uvarint(b)
		if err != nil {
			return 0, entry{}, fmt.Errorf("marker length: %w", err)
		}
		if l == 0 {
			return 0, entry{}, errors.New("empty marker")
		}
		if l > uint64(len(rest)) {
			return 0, entry{}, errTruncated
		}
		e.markers = append(e.markers, string(rest[:l]))
		b = rest[l:]
	}
	if err := skipExtensions(b); err != nil {
		return 0, entry{}, err
	}
	if m, ok := repeated(e.markers); ok {
		return 0, entry{}, fmt.Errorf("repeated marker %q", m)
	}
	return epoch, e, nil
}

// appendClaim appends the encoding of an owner claim made at the given Unix
// nanoseconds.
func appendClaim(dst []byte, at int64) []byte {
	dst = append(dst, valueVersion, kindClaim)
	return binary.AppendVarint(dst, at)
}

// decodeClaim decodes an owner claim value.
func decodeClaim(b []byte) (at int64, err error) {
	b, err = header(b, kindClaim)
	if err != nil {
		return 0, err
	}
	if at, b, err = varint(b); err != nil {
		return 0, fmt.Errorf("claimed at: %w", err)
	}
	if err := skipExtensions(b); err != nil {
		return 0, err
	}
	return at, nil
}

// skipExtensions checks that b is a run of well-framed extension fields
// (uvarint tag, uvarint length, length bytes), which this version skips.
func skipExtensions(b []byte) error {
	for len(b) > 0 {
		_, rest, err := uvarint(b)
		if err != nil {
			return fmt.Errorf("extension tag: %w", err)
		}
		l, rest, err := uvarint(rest)
		if err != nil {
			return fmt.Errorf("extension length: %w", err)
		}
		if l > uint64(len(rest)) {
			return fmt.Errorf("extension of %d bytes: %w", l, errTruncated)
		}
		b = rest[l:]
	}
	return nil
}

// keyHashSize is the width of a done key's hash: 128 bits, so that two of
// a billion keys collide (and a record is skipped that should not be) with
// a probability below 1e-20.
const keyHashSize = 16

// keyHash is a key as the store remembers it once done.
type keyHash [keyHashSize]byte

// hashKey is SHA-256 cut to 128 bits: collision resistant, so that nobody
// can choose an idempotency key that makes another record skipped. A
// fallback key (dedupe.OffsetKey), which nobody chooses, is spelt out
// instead, cheaper: its offset in the first 8 bytes, then FNV-1a of its
// topic and partition. Two fallback keys of one partition never collide
// (their offsets differ); one meeting a SHA-256 output is a 128-bit
// coincidence, as likely as two SHA-256 outputs meeting.
func hashKey(key string) keyHash {
	if dedupe.IsOffsetKey(key) {
		if h, ok := offsetHash(key); ok {
			return h
		}
	}
	sum := sha256.Sum256([]byte(key))
	return keyHash(sum[:keyHashSize])
}

// offsetHash spells out a fallback key "\x00o:<topic>/<partition>/<offset>"
// written as OffsetKey writes it (a canonical offset); ok is false for any
// other spelling, which is hashed.
func offsetHash(key string) (keyHash, bool) {
	slash := strings.LastIndexByte(key, '/')
	digits := key[slash+1:]
	o, ok := offkey.ParseDigits(digits)
	if slash < 0 || !ok {
		return keyHash{}, false
	}
	var h keyHash
	binary.BigEndian.PutUint64(h[0:8], uint64(o))
	f := uint64(14695981039346656037) // FNV-1a, 64 bits
	for i := 0; i < slash; i++ {
		f ^= uint64(key[i])
		f *= 1099511628211
	}
	binary.BigEndian.PutUint64(h[8:16], f)
	return h, true
}

// fallbackHash is the hash of the fallback key of offset o of the input
// partition whose topic and partition hash to fnv (as offsetHash spells it
// out).
func fallbackHash(o, fnv uint64) keyHash {
	var h keyHash
	binary.BigEndian.PutUint64(h[0:8], o)
	binary.BigEndian.PutUint64(h[8:16], fnv)
	return h
}

// fallbackOffset returns the offset h spells out if it is a fallback key
// of the input partition whose topic and partition hash to fnv.
func fallbackOffset(h keyHash, fnv uint64) (uint64, bool) {
	if binary.BigEndian.Uint64(h[8:]) != fnv {
		return 0, false
	}
	return binary.BigEndian.Uint64(h[:8]), true
}

// appendHashes appends the encoding of a done or begun record (kind) of
// keys written by the owner of epoch, that expire together.
func appendHashes(dst []byte, kind byte, epoch, expires int64, hs []keyHash) []byte {
	dst = append(dst, valueVersion, kind)
	dst = binary.AppendUvarint(dst, uint64(epoch))
	dst = binary.AppendVarint(dst, expires)
	dst = binary.AppendUvarint(dst, uint64(len(hs)))
	for i := range hs {
		dst = append(dst, hs[i][:]...)
	}
	return dst
}

// decodeHashes decodes a done or begun record (kind); fn is called for
// each hash.
func decodeHashes(b []byte, kind byte, fn func(h keyHash)) (epoch, expires int64, err error) {
	b, err = header(b, kind)
	if err != nil {
		return 0, 0, err
	}
	u, b, err := uvarint(b)
	if err != nil {
		return 0, 0, fmt.Errorf("epoch: %w", err)
	}
	if u > math.MaxInt64 {
		return 0, 0, fmt.Errorf("epoch %d out of range", u)
	}
	if expires, b, err = varint(b); err != nil {
		return 0, 0, fmt.Errorf("expires: %w", err)
	}
	n, b, err := uvarint(b)
	if err != nil {
		return 0, 0, fmt.Errorf("key count: %w", err)
	}
	if n > uint64(len(b)/keyHashSize) {
		return 0, 0, fmt.Errorf("key count %d exceeds the value", n)
	}
	hs := b[:n*keyHashSize]
	if err := skipExtensions(b[n*keyHashSize:]); err != nil {
		return 0, 0, err
	}
	if fn != nil {
		for i := 0; i < len(hs); i += keyHashSize {
			fn(keyHash(hs[i : i+keyHashSize]))
		}
	}
	return int64(u), expires, nil
}

// appendRuns appends the encoding of a runs record of keys done written by
// the owner of epoch, that expire together: the offsets of runs (in
// increasing order, disjoint) of the partition whose fallback keys' hashes
// end in fnv.
func appendRuns(dst []byte, epoch, expires int64, fnv uint64, runs []offRun) []byte {
	dst = append(dst, valueVersion, kindRuns)
	dst = binary.AppendUvarint(dst, uint64(epoch))
	dst = binary.AppendVarint(dst, expires)
	dst = binary.BigEndian.AppendUint64(dst, fnv)
	dst = binary.AppendUvarint(dst, uint64(len(runs)))
	var next uint64
	for _, r := range runs {
		dst = binary.AppendUvarint(dst, r.lo-next)
		dst = binary.AppendUvarint(dst, r.hi-r.lo)
		next = r.hi + 1
	}
	return dst
}

// decodeRuns decodes a runs record; fn is called for each run of offsets
// lo through hi.
func decodeRuns(b []byte, fn func(lo, hi uint64)) (epoch, expires int64, fnv uint64, err error) {
	b, err = header(b, kindRuns)
	if err != nil {
		return 0, 0, 0, err
	}
	u, b, err := uvarint(b)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("epoch: %w", err)
	}
	if u > math.MaxInt64 {
		return 0, 0, 0, fmt.Errorf("epoch %d out of range", u)
	}
	if expires, b, err = varint(b); err != nil {
		return 0, 0, 0, fmt.Errorf("expires: %w", err)
	}
	if len(b) < 8 {
		return 0, 0, 0, errTruncated
	}
	fnv = binary.BigEndian.Uint64(b)
	n, b, err := uvarint(b[8:])
	if err != nil {
		return 0, 0, 0, fmt.Errorf("run count: %w", err)
	}
	if n > uint64(len(b)/2) { // each run takes at least two bytes
		return 0, 0, 0, fmt.Errorf("run count %d exceeds the value", n)
	}
	// Checked in full before fn sees a run: a malformed record is
	// skipped whole.
	body := b
	var next uint64
	for range n {
		var gap, l uint64
		if gap, b, err = uvarint(b); err != nil {
			return 0, 0, 0, fmt.Errorf("run gap: %w", err)
		}
		if l, b, err = uvarint(b); err != nil {
			return 0, 0, 0, fmt.Errorf("run length: %w", err)
		}
		if next > math.MaxInt64 || gap > math.MaxInt64-next || l > math.MaxInt64-next-gap {
			return 0, 0, 0, errors.New("run beyond the largest offset")
		}
		next += gap + l + 1
	}
	if err := skipExtensions(b); err != nil {
		return 0, 0, 0, err
	}
	if fn != nil {
		next = 0
		for range n {
			gap, rest, _ := uvarint(body)
			l, rest, _ := uvarint(rest)
			body = rest
			fn(next+gap, next+gap+l)
			next += gap + l + 1
		}
	}
	return int64(u), expires, fnv, nil
}

func header(b []byte, kind byte) ([]byte, error) {
	if len(b) < 2 {
		return nil, errTruncated
	}
	if b[0] != valueVersion {
		return nil, fmt.Errorf("unknown version %d", b[0])
	}
	if b[1] != kind {
		return nil, fmt.Errorf("kind %d, want %d", b[1], kind)
	}
	return b[2:], nil
}

// uvarint reads a canonical uvarint.
func uvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, errTruncated
	}
	if n != uvarintLen(v) {
		return 0, nil, errors.New("non-canonical varint")
	}
	return v, b[n:], nil
}

// varint reads a canonical varint.
func varint(b []byte) (int64, []byte, error) {
	v, n := binary.Varint(b)
	if n <= 0 {
		return 0, nil, errTruncated
	}
	if n != varintLen(v) {
		return 0, nil, errors.New("non-canonical varint")
	}
	return v, b[n:], nil
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func varintLen(v int64) int {
	u := uint64(v) << 1 // zig-zag, as encoding/binary does
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}

// repeated returns a marker that occurs twice in ms, if any.
func repeated(ms []string) (string, bool) {
	if len(ms) <= 16 {
		for i, m := range ms {
			for _, prev := range ms[:i] {
				if prev == m {
					return m, true
				}
			}
		}
		return "", false
	}
	seen := make(map[string]struct{}, len(ms))
	for _, m := range ms {
		if _, ok := seen[m]; ok {
			return m, true
		}
		seen[m] = struct{}{}
	}
	return "", false
}

// recordKey is the changelog key of an idempotency key.
func recordKey(key string) []byte {
	if key == "" || key[0] == 0 {
		b := make([]byte, 0, 2+len(key))
		return append(append(b, 0, 0), key...)
	}
	return []byte(key)
}

// parseKey tells a changelog key's idempotency key, or that it is an owner
// claim.
func parseKey(k []byte) (key string, claim bool, err error) {
	switch {
	case len(k) == 0:
		return "", false, errors.New("record without a key")
	case k[0] != 0:
		return string(k), false, nil
	case len(k) >= 2 && k[1] == 0:
		return string(k[2:]), false, nil
	case len(k) > len(claimPrefix) && string(k[:len(claimPrefix)]) == claimPrefix:
		return "", true, nil
	case hashSetKind(k) != 0:
		return "", false, nil
	}
	return "", false, fmt.Errorf("unknown reserved key %q", k)
}

// hashSetKind tells the kind of record a changelog key names if it is a
// done or begun record, else 0.
func hashSetKind(k []byte) byte {
	switch {
	case len(k) > len(donePrefix) && string(k[:len(donePrefix)]) == donePrefix:
		return kindDone
	case len(k) > len(begunPrefix) && string(k[:len(begunPrefix)]) == begunPrefix:
		return kindBegun
	}
	return 0
}

// headerInt reads a decimal int64 header; ok is false when it is absent.
func headerInt(r *kgo.Record, name string) (v int64, ok bool, err error) {
	for _, h := range r.Headers {
		if h.Key == name {
			v, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err != nil || v < 0 {
				return 0, true, fmt.Errorf("header %s %q", name, h.Value)
			}
			return v, true, nil
		}
	}
	return 0, false, nil
}

// tombstoneEpoch reads the epoch header of a tombstone.
func tombstoneEpoch(r *kgo.Record) (int64, error) {
	for _, h := range r.Headers {
		if h.Key == epochHeader {
			v, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("tombstone epoch %q", h.Value)
			}
			return v, nil
		}
	}
	return 0, errors.New("tombstone without an epoch header")
}
