package offsets

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// MaxMetadata is the largest commit metadata Kafka accepts by default (the
// broker's offset.metadata.max.bytes). A commit with more is refused with
// OFFSET_METADATA_TOO_LARGE; kfake does not check it, so the encoder does.
const MaxMetadata = 4096

// metadataPrefix names the format and its version. A decoder that meets
// another prefix leaves the metadata alone.
const (
	metadataPrefix  = "kbatch:"
	metadataVersion = "1:"
)

// Range is the offsets [First, Last], both included.
type Range struct {
	First, Last int64
}

// Len is the number of offsets in r.
func (r Range) Len() int64 { return r.Last - r.First + 1 }

// Errors of DecodeCompleted. Each means the metadata cannot be used: the
// offsets beyond the committed one are handled again.
var (
	// ErrForeignMetadata: the metadata was not written by kbatch (another
	// client, or a tool).
	ErrForeignMetadata = errors.New("offsets: commit metadata not written by kbatch")
	// ErrMetadataVersion: written by a kbatch version with a format this
	// one does not know.
	ErrMetadataVersion = errors.New("offsets: commit metadata of an unknown format version")
	// ErrBadMetadata: kbatch's prefix but a malformed body.
	ErrBadMetadata = errors.New("offsets: malformed commit metadata")
)

// EncodeCompleted encodes the completed ranges beyond the committed offset
// (the watermark: itself not completed) as commit metadata of at most limit
// bytes (MaxMetadata when limit <= 0). The ranges must be above committed, in
// increasing order and not overlapping; adjacent ones are merged.
//
// When they do not all fit, the ranges nearest to the watermark are encoded
// and the rest left out: n is how many of the given ranges were encoded
// whole. What is left out is handled again after a restart, which is safe
// (at-least-once); a commit never fails for its metadata. With nothing to
// encode it returns "".
//
// The format is "kbatch:1:" followed by the unpadded URL-safe base64 of a
// sequence of unsigned varint pairs (gap, length-1), one per range: a range
// starts gap+1 offsets after the previous range's end + 1 (the first one,
// after the committed offset), since the offset between two ranges, like the
// watermark, is not completed.
func EncodeCompleted(committed int64, done []Range, limit int) (meta string, n int) {
	if limit <= 0 {
		limit = MaxMetadata
	}
	room := limit - len(metadataPrefix) - len(metadataVersion)
	rawRoom := room * 3 / 4 // base64 without padding: 4 characters per 3 bytes
	if rawRoom <= 0 || len(done) == 0 {
		return "", 0
	}
	var raw []byte
	var tmp [2 * binary.MaxVarintLen64]byte
	cursor := committed // an offset not completed
	i := 0
	for i < len(done) {
		r := done[i]
		if r.First <= cursor || r.Last < r.First {
			break // not in order: encode what came before
		}
		// Merge the adjacent ranges that follow.
		j := i + 1
		for j < len(done) && done[j].First == r.Last+1 && done[j].Last >= done[j].First {
			r.Last = done[j].Last
			j++
		}
		k := binary.PutUvarint(tmp[:], uint64(r.First-cursor-1))
		k += binary.PutUvarint(tmp[k:], uint64(r.Last-r.First))
		if len(raw)+k > rawRoom {
			break
		}
		raw = append(raw, tmp[:k]...)
		if r.Last == math.MaxInt64 {
			i = j
			break
		}
		cursor = r.Last + 1
		i = j
	}
	if len(raw) == 0 {
		return "", i
	}
	return metadataPrefix + metadataVersion + base64.RawURLEncoding.EncodeToString(raw), i
}

// DecodeCompleted decodes metadata written by EncodeCompleted for a commit at
// committed, returning the completed ranges beyond it in increasing order.
// Empty metadata gives no ranges and no error. Metadata of another client,
// of an unknown version, or malformed gives an error (ErrForeignMetadata,
// ErrMetadataVersion, ErrBadMetadata) and no ranges: the caller reports it
// and handles everything beyond the committed offset again.
func DecodeCompleted(committed int64, meta string) ([]Range, error) {
	if meta == "" {
		return nil, nil
	}
	if committed < 0 {
		return nil, fmt.Errorf("%w: committed offset %d", ErrBadMetadata, committed)
	}
	rest, ok := strings.CutPrefix(meta, metadataPrefix)
	if !ok {
		return nil, ErrForeignMetadata
	}
	body, ok := strings.CutPrefix(rest, metadataVersion)
	if !ok {
		return nil, ErrMetadataVersion
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMetadata, err)
	}
	var out []Range
	cursor := committed
	for len(raw) > 0 {
		gap, k := binary.Uvarint(raw)
		if k <= 0 {
			return nil, fmt.Errorf("%w: truncated gap", ErrBadMetadata)
		}
		raw = raw[k:]
		span, k := binary.Uvarint(raw)
		if k <= 0 {
			return nil, fmt.Errorf("%w: truncated length", ErrBadMetadata)
		}
		raw = raw[k:]
		// first = cursor + 1 + gap and last = first + span, both within int64.
		if cursor == math.MaxInt64 || gap > uint64(math.MaxInt64-cursor-1) {
			return nil, fmt.Errorf("%w: offset out of range", ErrBadMetadata)
		}
		first := cursor + 1 + int64(gap)
		if span > uint64(math.MaxInt64-first) {
			return nil, fmt.Errorf("%w: offset out of range", ErrBadMetadata)
		}
		last := first + int64(span)
		out = append(out, Range{First: first, Last: last})
		if last == math.MaxInt64 {
			if len(raw) > 0 {
				return nil, fmt.Errorf("%w: range after the last offset", ErrBadMetadata)
			}
			break
		}
		cursor = last + 1
	}
	return out, nil
}
