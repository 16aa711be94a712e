package offsets

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// TestEncodeCompletedRoundTrips guards the restart's skip list: what the
// encoder writes decodes to exactly the ranges it says it encoded.
func TestEncodeCompletedRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 500; i++ {
		committed := rng.Int64N(1 << 40)
		var done []Range
		at := committed
		for n := rng.IntN(50); n > 0; n-- {
			first := at + 1 + rng.Int64N(1000)
			last := first + rng.Int64N(100)
			done = append(done, Range{first, last})
			at = last + 1
		}
		meta, n := EncodeCompleted(committed, done, 0)
		if n != len(done) {
			t.Fatalf("encoded %d of %d ranges, all fit", n, len(done))
		}
		got, err := DecodeCompleted(committed, meta)
		if err != nil {
			t.Fatalf("decode %q: %v", meta, err)
		}
		if len(done) == 0 {
			done = nil
		}
		if !reflect.DeepEqual(got, done) {
			t.Fatalf("round trip:\n got %v\nwant %v", got, done)
		}
	}
}

// TestEncodeCompletedMergesAdjacentRanges guards a wasteful encoding: ranges
// that touch are one range.
func TestEncodeCompletedMergesAdjacentRanges(t *testing.T) {
	meta, n := EncodeCompleted(10, []Range{{12, 13}, {14, 20}, {22, 22}}, 0)
	if n != 3 {
		t.Fatalf("n = %d, want 3", n)
	}
	got, err := DecodeCompleted(10, meta)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Range{{12, 20}, {22, 22}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestEncodeCompletedStaysWithinTheLimit guards OFFSET_METADATA_TOO_LARGE: a
// sparse completion pattern that does not fit is cut to the ranges nearest
// the watermark, never over the limit, and those decode back.
func TestEncodeCompletedStaysWithinTheLimit(t *testing.T) {
	var done []Range
	for o := int64(1); o < 200000; o += 2 { // every other offset: the worst case
		done = append(done, Range{o * 1000, o * 1000})
	}
	for _, limit := range []int{0, 100, MaxMetadata, 20} {
		meta, n := EncodeCompleted(0, done, limit)
		max := limit
		if max == 0 {
			max = MaxMetadata
		}
		if len(meta) > max {
			t.Fatalf("limit %d: metadata of %d bytes", limit, len(meta))
		}
		if n >= len(done) {
			t.Fatalf("limit %d: all %d ranges claimed to fit in %d bytes", limit, len(done), len(meta))
		}
		got, err := DecodeCompleted(0, meta)
		if err != nil {
			t.Fatalf("limit %d: %v", limit, err)
		}
		if len(got) != n || (n > 0 && !reflect.DeepEqual(got, done[:n])) {
			t.Fatalf("limit %d: decoded %d ranges, encoder said %d", limit, len(got), n)
		}
	}
}

// TestDecodeCompletedRefusesWhatItDoesNotKnow guards against skipping
// records on the word of another client's metadata or a future format.
func TestDecodeCompletedRefusesWhatItDoesNotKnow(t *testing.T) {
	for _, tc := range []struct {
		name string
		meta string
		want error
	}{
		{"another client's metadata", "consumer-1 at host a", ErrForeignMetadata},
		{"a future format version", "kbatch:2:AAAA", ErrMetadataVersion},
		{"invalid base64", "kbatch:1:***", ErrBadMetadata},
		{"a truncated varint", "kbatch:1:gA", ErrBadMetadata},
		{"a pair cut in half", "kbatch:1:AQ", ErrBadMetadata},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeCompleted(5, tc.meta)
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("got %v, %v; want nil, %v", got, err, tc.want)
			}
		})
	}
	if got, err := DecodeCompleted(5, ""); got != nil || err != nil {
		t.Fatalf("empty metadata: got %v, %v", got, err)
	}
}

// FuzzDecodeCompleted checks the decoder on any input: it never panics; what
// it accepts lies beyond the committed offset, in increasing order with a
// not-completed offset between ranges; and encoding it again gives the same
// ranges (the format has one meaning for each accepted string).
func FuzzDecodeCompleted(f *testing.F) {
	m, _ := EncodeCompleted(100, []Range{{102, 110}, {200, 200}}, 0)
	f.Add(int64(100), m)
	f.Add(int64(0), "kbatch:1:")
	f.Add(int64(math.MaxInt64-3), "kbatch:1:AAAA")
	f.Add(int64(7), "kbatch:1:__________8B")
	f.Add(int64(7), "something else")
	f.Fuzz(func(t *testing.T, committed int64, meta string) {
		got, err := DecodeCompleted(committed, meta)
		if err != nil {
			if got != nil {
				t.Fatalf("ranges %v with error %v", got, err)
			}
			return
		}
		cursor := committed
		for _, r := range got {
			if r.First <= cursor || r.Last < r.First {
				t.Fatalf("range %v not beyond %d in %v", r, cursor, got)
			}
			if r.Last == math.MaxInt64 {
				break
			}
			cursor = r.Last + 1
		}
		again, n := EncodeCompleted(committed, got, len(meta)+16)
		if n != len(got) {
			t.Fatalf("re-encoding %v kept %d ranges", got, n)
		}
		back, err := DecodeCompleted(committed, again)
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("re-encoded %q decodes to %v, %v; want %v", again, back, err, got)
		}
		if strings.HasPrefix(meta, metadataPrefix) && len(again) > len(meta) {
			t.Fatalf("canonical encoding %q longer than %q", again, meta)
		}
	})
}
