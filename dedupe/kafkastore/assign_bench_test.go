package kafkastore

import (
	"runtime"
	"strconv"
	"testing"

	"github.com/kbatch/kbatch/dedupe"
	"github.com/kbatch/kbatch/internal/kafkatest"
)

// BenchmarkAssign measures what a rebalance costs: Assign of a partition
// whose changelog holds the given number of keys done (written in batches
// of 1000, as the consumer does), against that number.
func BenchmarkAssign(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(strconv.Itoa(n)+" keys", func(b *testing.B) {
			brokers := kafkatest.Brokers(b)
			input := kafkatest.NewTopic(b, 1)
			group := kafkatest.NewGroup(b)
			deleteAtEnd(b, brokers, group+"."+input+".kbatch-dedupe")
			ctx := testContext(b)
			p := dedupe.Partition{Topic: input, Partition: 0}
			s := openStore(b, brokers, Options{Group: group})
			if err := s.Assign(ctx, p); err != nil {
				b.Fatal(err)
			}
			keys := make([]string, 1000)
			for done := 0; done < n; done += len(keys) {
				for j := range keys {
					keys[j] = "order-" + strconv.Itoa(done+j)
				}
				if _, err := s.Begin(ctx, p, keys); err != nil {
					b.Fatal(err)
				}
				if err := s.Done(ctx, p, keys); err != nil {
					b.Fatal(err)
				}
			}
			_ = s.Close()
			for b.Loop() {
				s := openStore(b, brokers, Options{Group: group})
				if err := s.Assign(ctx, p); err != nil {
					b.Fatal(err)
				}
				_ = s.Close()
			}
		})
	}
}

// BenchmarkDoneKeyHeap measures the live heap a key done costs the store
// (after a GC, 100,000 keys done in batches of 1000), reported as B/key.
// Run it against a real broker (KAFKA_BROKERS): an embedded broker's own
// copy of the changelog would count too.
func BenchmarkDoneKeyHeap(b *testing.B) {
	const n = 100_000
	for b.Loop() {
		b.StopTimer()
		brokers := kafkatest.Brokers(b)
		input := kafkatest.NewTopic(b, 1)
		group := kafkatest.NewGroup(b)
		deleteAtEnd(b, brokers, group+"."+input+".kbatch-dedupe")
		ctx := testContext(b)
		p := dedupe.Partition{Topic: input, Partition: 0}
		s := openStore(b, brokers, Options{Group: group})
		if err := s.Assign(ctx, p); err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.StartTimer()
		keys := make([]string, 1000)
		for done := 0; done < n; done += len(keys) {
			for j := range keys {
				keys[j] = "order-" + strconv.Itoa(done+j)
			}
			if _, err := s.Begin(ctx, p, keys); err != nil {
				b.Fatal(err)
			}
			if err := s.Done(ctx, p, keys); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		keys = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "B/key")
		_ = s.Close()
		b.StartTimer()
	}
}
