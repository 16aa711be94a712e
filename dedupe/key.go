package dedupe

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultHeader is the record header that carries the idempotency key.
const DefaultHeader = "Idempotency-Key"

// KeyFunc returns a record's idempotency key; ok false falls back to the
// default (the header, then topic/partition/offset).
type KeyFunc func(r *kgo.Record) (key string, ok bool)

// KeyOf returns r's key: fn's if it gives one, else the value of the header
// named header (DefaultHeader when empty), else "topic/partition/offset".
func KeyOf(r *kgo.Record, header string, fn KeyFunc) string {
	if fn != nil {
		if k, ok := fn(r); ok && k != "" {
			return k
		}
	}
	if header == "" {
		header = DefaultHeader
	}
	for _, h := range r.Headers {
		if h.Key == header && len(h.Value) > 0 {
			return string(h.Value)
		}
	}
	return OffsetKey(r.Topic, r.Partition, r.Offset)
}

// OffsetKey is the fallback key of a record without an idempotency key.
func OffsetKey(topic string, partition int32, offset int64) string {
	b := make([]byte, 0, len(topic)+24)
	b = append(b, topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, offset, 10)
	return string(b)
}
