package dedupe_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
)

// FuzzKeyOf states how a record's idempotency key is read from headers that
// any producer may have written: KeyOf never panics; the first header named
// Idempotency-Key (or the configured name) with a non-empty value is the
// key, byte for byte, whatever else the record holds (other headers, the
// same name again, names differing only in case); without one the key is
// the topic/partition/offset fallback; and a KeyFunc that gives no key
// falls back the same way.
func FuzzKeyOf(f *testing.F) {
	f.Add("orders", int32(0), int64(5), []byte("Idempotency-Key\x00order-42\x00trace\x00abc"), "")
	f.Add("orders", int32(3), int64(-1), []byte("Idempotency-Key\x00\x00Idempotency-Key\x00second"), "")
	f.Add("t", int32(1), int64(1<<40), []byte("idempotency-key\x00lower\x00Key\x00v"), "Key")
	f.Add("a/b", int32(-1), int64(0), []byte("\x00\x00\x00\xff\xfe"), "")
	f.Fuzz(func(t *testing.T, topic string, partition int32, offset int64, raw []byte, name string) {
		r := &kgo.Record{Topic: topic, Partition: partition, Offset: offset, Headers: headers(raw)}
		want := dedupe.OffsetKey(topic, partition, offset)
		header := name
		if header == "" {
			header = dedupe.DefaultHeader
		}
		fromHeader := false
		for _, h := range r.Headers {
			if h.Key == header && len(h.Value) > 0 {
				want, fromHeader = string(h.Value), true
				if h.Value[0] == 0 {
					want = "\x00" + want
				}
				break
			}
		}
		if got := dedupe.KeyOf(r, name, nil); got != want {
			t.Fatalf("KeyOf(headers %q, header %q) = %q, want %q", r.Headers, name, got, want)
		}
		if got := string(dedupe.AppendKey([]byte("x"), r, name, nil)); got != "x"+want {
			t.Fatalf("AppendKey = %q, want %q", got, "x"+want)
		}
		// A header key never names a fallback key, whatever its bytes.
		if fromHeader && strings.HasPrefix(want, "\x00o:") {
			t.Fatalf("header key %q is in the fallback keys' namespace", want)
		}
		noKey := func(*kgo.Record) (string, bool) { return "", true }
		if got := dedupe.KeyOf(r, name, noKey); got != want {
			t.Fatalf("KeyOf with a KeyFunc giving no key = %q, want the fallback %q", got, want)
		}
		fixed := func(*kgo.Record) (string, bool) { return "from-func", true }
		if got := dedupe.KeyOf(r, name, fixed); got != "from-func" {
			t.Fatalf("KeyOf with a KeyFunc = %q, want the function's key", got)
		}
	})
}

// FuzzOffsetKey states that the fallback key tells records apart: two
// (topic, partition, offset) triples get the same key only if they are the
// same, even for topic names with slashes (which Kafka refuses, but kfake
// and other versions may not).
func FuzzOffsetKey(f *testing.F) {
	f.Add("a", int32(1), int64(2), "a/1", int32(2), int64(2))
	f.Add("orders", int32(0), int64(10), "orders", int32(0), int64(10))
	f.Add("x/1", int32(-1), int64(-1), "x", int32(1), int64(-1))
	f.Fuzz(func(t *testing.T, t1 string, p1 int32, o1 int64, t2 string, p2 int32, o2 int64) {
		same := t1 == t2 && p1 == p2 && o1 == o2
		k1, k2 := dedupe.OffsetKey(t1, p1, o1), dedupe.OffsetKey(t2, p2, o2)
		if (k1 == k2) != same {
			t.Fatalf("OffsetKey(%q,%d,%d) = %q and OffsetKey(%q,%d,%d) = %q", t1, p1, o1, k1, t2, p2, o2, k2)
		}
	})
}

// headers splits raw into headers: NUL-separated key, value, key, value...
func headers(raw []byte) []kgo.RecordHeader {
	parts := bytes.Split(raw, []byte{0})
	var hs []kgo.RecordHeader
	for i := 0; i+1 < len(parts); i += 2 {
		hs = append(hs, kgo.RecordHeader{Key: string(parts[i]), Value: parts[i+1]})
	}
	return hs
}
