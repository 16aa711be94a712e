// Package dedupe remembers, per idempotency key, how often a record was
// handed out and how far its processing got, so that replays are skipped and
// a record that keeps failing can be stopped.
//
// # Keys and entries
//
// A record's key is [KeyOf]: a user [KeyFunc]'s, else the value of the
// Idempotency-Key header ([DefaultHeader]), else [OffsetKey] (which catches
// redeliveries of the same offset, not a producer writing the same message
// twice). The two kinds never meet: fallback keys start with "\x00o:", and
// a given key starting with a NUL byte gets a second one. Keys are scoped
// per input [Partition]: the same key in two partitions is two entries, so
// a replay is recognised only if it lands in its original's partition
// (produced with the same record key). An [Entry] holds:
//
//   - Attempts, the dequeue count: how many times the record was handed out,
//     this delivery included;
//   - Markers, the steps the handler declared finished ("charged",
//     "emailed"), in the order first marked;
//   - Done: the record was handled successfully (or dead-lettered);
//   - Expires: when the store may forget the key (its retention after the
//     last write).
//
// # One batch
//
//	es, _ := store.Lookup(ctx, p, keys) // what to skip (done), what to narrow down (attempts > 1)
//	es, _ = store.Begin(ctx, p, keys)   // attempts++ for every key not done: durable before the handler runs
//	// handler runs; es[i].Attempts and es[i].Markers tell it about record i;
//	// after a side effect it calls store.Mark(ctx, p, key, "charged")
//	_ = store.Done(ctx, p, keys)        // only after the handler succeeded
//
// Each call is one round trip for the whole batch. Past MaxAttempts the
// consumer sends the record to the dead-letter topic instead of the handler.
//
// # Why attempts before, done after
//
// Watermill's deduplicator records a key before the handler runs, so a
// message whose handling failed is dropped when it is redelivered: lost. Here
// only Done makes a key skipped, and Done comes after success, so a failure
// is always retried. Attempts, on the other hand, are counted durably before
// the handler runs: a record that crashes the whole process every time (no
// in-memory retry counter survives that) still climbs to MaxAttempts and is
// dead-lettered instead of looping forever. The price is at-least-once: a
// crash between the handler's success and Done hands the record out again,
// which is what markers are for: the replay sees "charged" and skips that
// step.
//
// # Partitions and owners
//
// A store keeps its state per partition. [Store.Assign] is called when the
// partition is assigned, before its first batch: a store that loads state
// (the Kafka store) loads it there, and every store fences the partition's
// earlier owner, whose later writes then fail with [ErrFenced] (or are
// ignored) so that a zombie member cannot overwrite the new owner's entries.
// [Store.Release] is called on revoke or loss and drops what is held in
// memory; the stored state stays for the next owner.
//
// # Stores
//
//   - [Memory] ([NewMemory]): bounded by MaxKeys and MaxAge, for tests and
//     single-process services. Stores that share a [MemoryBackend] behave
//     like processes sharing a database: a store opened on the backend of a
//     closed one sees what it wrote, and Assign fences the earlier owner.
//   - dedupe/kafkastore: a compacted changelog topic co-partitioned with the
//     input, loaded on Assign; nothing to run besides Kafka, and the state
//     moves with the partition.
//
// Every store passes the conformance suite in dedupe/dedupetest. A store
// may also implement [OffsetStore], which takes a partition's fallback keys
// as offsets: the consumer then builds no key string for them and the store
// parses none back (Memory does; its fallback keys cost a span of offsets
// per batch, not an entry per record).
package dedupe
