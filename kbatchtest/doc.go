// Package kbatchtest is a Kafka for testing services built on kbatch: a
// broker, topics with unique names, records produced in bulk, and a wait for
// a consumer group to commit.
//
// Where the broker comes from:
//   - KAFKA_BROKERS=host:port[,host:port] set: that cluster (Start, New);
//   - otherwise: an embedded franz-go kfake cluster of three brokers on
//     loopback ports, started in the test's own process, so `go test` needs
//     nothing installed. Embedded always starts one; Connect never does.
//
// A test of a handler, end to end:
//
//	func TestOrdersAreStored(t *testing.T) {
//		k := kbatchtest.New(t) // closed when the test ends
//		topic := k.NewTopic(t, 3)
//		group := kbatchtest.Name(t, "g")
//		if err := k.Produce(ctx, topic, 100, kbatchtest.Values(func(i int) []byte { return order(i) })); err != nil {
//			t.Fatal(err)
//		}
//		end, _ := k.EndOffsets(ctx, topic)
//		c, _ := consumer.New(consumer.Config{Brokers: k.Brokers(), Group: group, Topics: []string{topic}}, handler)
//		go c.Run(ctx)
//		if err := k.WaitCommitted(ctx, group, topic, end); err != nil { // every record handled and committed
//			t.Fatal(err)
//		}
//		// check the handler's side effects here
//	}
//
// The same calls work in programs (examples, demos): Start or Embedded return
// an error instead of failing a test, and UniqueName names topics without a
// testing.TB.
//
// A handler's unit test needs no broker: consumer.NewTestBatch builds the
// Batch kbatch would hand it, with each record's idempotency key, attempts
// and markers (a replay after a crash, a record handed out for the third
// time), and records the markers the handler sets.
//
// kfake is not Kafka: it serves every broker from one goroutine, accepts
// topic configs Kafka refuses, and compacts only when asked. Run a suite
// against a real broker too (KAFKA_BROKERS) before trusting behaviour that
// depends on Kafka's strictness.
package kbatchtest
