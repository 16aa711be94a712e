//go:build !memchild

package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/kbatchtest"
)

// produceSpec says what to pre-produce.
type produceSpec struct {
	Records     int
	Partitions  int
	ValueBytes  int
	Keys        int // distinct keys, cycled; 0 means records have no key
	Replication int
	Compression string
	// Compressible values are JSON-like text (as many events are) rather
	// than random bytes, so that a compression codec has work to do.
	Compressible bool
}

// compressionCodec maps a -compression value to kgo's codec.
func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none", "":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("unknown compression %q (none, gzip, snappy, lz4, zstd)", name)
}

// prepareTopic creates topic (if it does not exist) and fills it with
// spec.Records records, record i in partition i mod Partitions, each with a
// value of ValueBytes random bytes and the key "key-<i mod Keys>". An
// existing topic that already holds records is reused as it is. It returns
// the offsets each scenario must read.
func prepareTopic(ctx context.Context, brokers []string, topic string, spec produceSpec, produced *atomic.Int64) (*dataset, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	ds := &dataset{Topic: topic}
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("bench: looking up topic %s: %w", topic, err)
	}
	if td, ok := tds[topic]; ok && td.Err == nil {
		spans, n, err := topicSpans(ctx, adm, topic)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			ds.Spans, ds.Records = spans, n
			return ds, nil
		}
		spec.Partitions = len(spans) // empty: fill it as it is
	} else {
		resp, err := adm.CreateTopic(ctx, int32(spec.Partitions), int16(spec.Replication), nil, topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return nil, fmt.Errorf("bench: creating topic %s: %w", topic, err)
		}
		ds.Created = true
		// Kafka answers CreateTopics before its metadata shows every
		// partition: at 1024 partitions the producer gave up on
		// UNKNOWN_TOPIC_OR_PARTITION.
		kc, err := kbatchtest.Connect(brokers...)
		if err != nil {
			return nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err = kc.WaitForTopic(wctx, topic)
		cancel()
		kc.Close()
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}

	bytes, err := produce(ctx, brokers, topic, spec, produced)
	if err != nil {
		return nil, err
	}
	ds.Bytes = bytes
	// A new client: this one cached the topic's metadata from before it
	// existed.
	cl2, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	defer cl2.Close()
	spans, n, err := topicSpans(ctx, kadm.NewClient(cl2), topic)
	if err != nil {
		return nil, err
	}
	if n != int64(spec.Records) && ds.Created {
		return nil, fmt.Errorf("bench: topic %s holds %d records after producing %d", topic, n, spec.Records)
	}
	ds.Spans, ds.Records = spans, n
	return ds, nil
}

// topicSpans lists each partition's [start, end) offsets.
func topicSpans(ctx context.Context, adm *kadm.Client, topic string) (map[int32]Span, int64, error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, 0, fmt.Errorf("bench: listing start offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, 0, fmt.Errorf("bench: listing end offsets of %s: %w", topic, err)
	}
	spans := make(map[int32]Span)
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		from := int64(0)
		if s, ok := starts.Lookup(topic, o.Partition); ok {
			from = s.Offset
		}
		spans[o.Partition] = Span{From: from, To: o.Offset}
		n += max(o.Offset-from, 0)
	})
	return spans, n, nil
}

// produce writes the records and waits until every one is acknowledged. It
// returns their key+value bytes.
func produce(ctx context.Context, brokers []string, topic string, spec produceSpec, produced *atomic.Int64) (int64, error) {
	codec, err := compressionCodec(spec.Compression)
	if err != nil {
		return 0, err
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(codec),
		kgo.MaxBufferedRecords(1<<17),
	)
	if err != nil {
		return 0, err
	}
	defer cl.Close()

	// A pool of values, cheap to hand out: random (incompressible) unless
	// the spec asks for text.
	rng := rand.New(rand.NewPCG(1, 2))
	values := make([][]byte, 256)
	for i := range values {
		if spec.Compressible {
			values[i] = textValue(rng, spec.ValueBytes)
			continue
		}
		v := make([]byte, spec.ValueBytes)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		values[i] = v
	}

	var (
		mu       sync.Mutex
		firstErr error
		bytes    int64
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			return
		}
		produced.Add(1)
	}
	for i := range spec.Records {
		r := &kgo.Record{Partition: int32(i % spec.Partitions), Value: values[i%len(values)]}
		if spec.Keys > 0 {
			r.Key = strconv.AppendInt([]byte("key-"), int64(i%spec.Keys), 10)
		}
		bytes += int64(len(r.Key) + len(r.Value))
		cl.Produce(ctx, r, promise)
		if i%4096 == 0 && ctx.Err() != nil {
			break
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, fmt.Errorf("bench: producing to %s: %w", topic, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		return 0, fmt.Errorf("bench: producing to %s: %w", topic, firstErr)
	}
	return bytes, nil
}

// textValue is n bytes of JSON-like event text: a few fields drawn from
// small sets, repeated to length, so it compresses as real events do.
func textValue(rng *rand.Rand, n int) []byte {
	events := []string{"page_view", "add_to_cart", "checkout", "login", "search"}
	var b []byte
	for len(b) < n {
		b = fmt.Appendf(b, `{"event":%q,"user":"user-%04d","path":"/shop/item/%03d","status":"ok"}`,
			events[rng.IntN(len(events))], rng.IntN(10000), rng.IntN(1000))
	}
	return b[:n]
}

// deleteTopic removes a topic the suite created on an external broker.
func deleteTopic(ctx context.Context, brokers []string, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).DeleteTopics(ctx, topic)
	if err == nil {
		err = resp.Error()
	}
	return err
}
