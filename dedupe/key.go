package dedupe

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultHeader is the record header that carries the idempotency key.
const DefaultHeader = "Idempotency-Key"

// offsetKeyPrefix starts every fallback key. Keys given by a header or a
// KeyFunc never start with it: one starting with a NUL byte is escaped with
// a second NUL, so the two kinds of keys live in separate namespaces and a
// header can never name another record's fallback key.
const offsetKeyPrefix = "\x00o:"

// KeyFunc returns a record's idempotency key; ok false falls back to the
// default (the header, then topic/partition/offset).
type KeyFunc func(r *kgo.Record) (key string, ok bool)

// KeyOf returns r's key: fn's if it gives one, else the value of the header
// named header (DefaultHeader when empty), else the fallback OffsetKey. A
// key given by fn or the header is returned as it is, unless it starts with
// a NUL byte: then it is returned after a second NUL, so that it can never
// equal a fallback key (which starts with NUL, 'o', ':').
func KeyOf(r *kgo.Record, header string, fn KeyFunc) string {
	if fn != nil {
		if k, ok := fn(r); ok && k != "" {
			if k[0] == 0 {
				return "\x00" + k
			}
			return k
		}
	}
	return string(AppendKey(nil, r, header, nil))
}

// AppendKey appends the key KeyOf returns for r to dst. The consumer
// gathers a batch's keys in one buffer with it.
func AppendKey(dst []byte, r *kgo.Record, header string, fn KeyFunc) []byte {
	dst, ok := AppendGivenKey(dst, r, header, fn)
	if ok {
		return dst
	}
	return appendOffsetKey(dst, r.Topic, r.Partition, r.Offset)
}

// AppendGivenKey appends r's key to dst as AppendKey does, if fn or the
// header gives one; ok false means r's key is its fallback key, OffsetKey,
// and dst is returned as it was. A consumer talking to an OffsetStore
// gives such a key by its offset rather than building it.
func AppendGivenKey(dst []byte, r *kgo.Record, header string, fn KeyFunc) (_ []byte, ok bool) {
	if fn != nil {
		if k, ok := fn(r); ok && k != "" {
			if k[0] == 0 {
				dst = append(dst, 0)
			}
			return append(dst, k...), true
		}
	}
	if header == "" {
		header = DefaultHeader
	}
	for _, h := range r.Headers {
		if h.Key == header && len(h.Value) > 0 {
			if h.Value[0] == 0 {
				dst = append(dst, 0)
			}
			return append(dst, h.Value...), true
		}
	}
	return dst, false
}

// OffsetKey is the fallback key of a record without an idempotency key:
// NUL, 'o', ':', then topic/partition/offset.
func OffsetKey(topic string, partition int32, offset int64) string {
	return string(appendOffsetKey(make([]byte, 0, len(offsetKeyPrefix)+len(topic)+24), topic, partition, offset))
}

func appendOffsetKey(b []byte, topic string, partition int32, offset int64) []byte {
	b = append(b, offsetKeyPrefix...)
	b = append(b, topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, '/')
	return strconv.AppendInt(b, offset, 10)
}

// IsOffsetKey reports whether key is a fallback key (OffsetKey), which no
// header or KeyFunc key can be.
func IsOffsetKey(key string) bool {
	return len(key) >= len(offsetKeyPrefix) && key[:len(offsetKeyPrefix)] == offsetKeyPrefix
}
