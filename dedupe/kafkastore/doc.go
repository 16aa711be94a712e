// Package kafkastore is a dedupe.Store kept in Kafka itself: a compacted
// changelog topic per input topic, co-partitioned with it, so that the
// idempotency state of input partition p lives in changelog partition p and
// moves with it when the group rebalances. Nothing runs besides Kafka.
//
//	store, err := kafkastore.New(kafkastore.Options{Brokers: brokers, Group: "billing"})
//	// ... consumer.Config{Dedupe: &consumer.Dedupe{Store: store}} ...
//	defer store.Close()
//
// # The changelog
//
// The changelog of input topic T is "<Group>.<T>.kbatch-dedupe" (see
// Options.TopicName). The first Assign creates it with kadm when it is
// missing, with cleanup.policy=compact and T's partition count (replication:
// Options.ReplicationFactor); an existing changelog with another partition
// count is refused with a *PartitionCountError, and one that is not compacted
// gets a warning in the log. Records are versioned binary values (see
// codec.go), forward compatible: fields and flags a newer version adds are
// skipped. A Begin writes one record holding the 128-bit hashes of the keys
// handed out for the first time; a Done one record holding the hashes of
// the keys done (a done key is kept as its hash and expiry only), the
// partition's own fallback keys apart, which go in a record of runs of
// offsets and are kept in memory as such; a key retried or marked gets a
// record of its own with its attempts and markers.
// Every record carries the writer's owner epoch. Records are written with
// acks=all by an idempotent producer to the exact partition (a manual
// partitioner), one produce round per Begin, Mark or Done. Begin and Mark
// return once their records are acknowledged; Done returns once its
// records are produced, and the next write of the partition (the next
// batch's Begin) waits for them: the records of one partition are
// acknowledged in order, so a batch waits on one round trip, not two. A
// Done whose records failed is reported by that next write, which writes
// them again; Release and Close wait for the Done records in flight (see
// rounds.go for the crash windows). Options.MaxKeys
// bounds the keys held in memory per partition: past it the keys done that
// expire first are forgotten (Stats.Evicted), at-least-once, never a loss.
//
// # Assign: claim, then load
//
// Assign first reads the end offset of changelog partition p (the claim's
// base), then writes an owner claim there, under a key of its own
// ("\x00kbatch-owner/<random>") with the base in a header. The claim's
// offset is the new owner's epoch, and every later record of that owner
// carries it. A claim counts only if its base is above the latest claim
// that counts: one still in flight when its member lost the partition, which
// lands after the new owner's, is void and fences nobody; an owner whose
// claim was voided by a concurrent one claims again. Then
// Assign reads the partition from its start up to its claim, folding each
// record into a map by the log-order fencing rule:
//
//	a record whose epoch is lower than the highest epoch seen before it in
//	the log is ignored: a zombie (an earlier owner still running) wrote it
//	after a later owner had claimed the partition.
//
// Offsets order the claims, so two members assigned p at once cannot both
// win: the later claim does, and the earlier one's first write is fenced.
// Reading up to one's own claim always ends, since the claim exists
// whatever compaction removed before it. Entries past their Expires are
// not loaded. Malformed records (a value this version cannot decode, an
// unknown reserved key) are logged, counted in Stats and skipped.
//
// # Writes and fencing
//
// The store remembers the offset after the last record it knows of. When a
// write's records land right there, nobody else wrote in between and the map
// is updated. Otherwise the records in between are read back and folded in
// by the same rule; if a later claim is among them, the partition is fenced:
// the write (already in the log, but after the claim, so ignored by every
// later load) and every later call for the partition return
// dedupe.ErrFenced.
//
// # Compaction
//
// Compaction keeps the last record of each key, which could keep a zombie's
// ignored record and drop the real owner's earlier one. So an owner that
// reads a zombie's record for key k, while loading or while reading back,
// rewrites k's current state (or deletes it) in its next write: the zombie's
// record is no longer the last. Claims are never compacted away, each having
// its own key, until an owner deletes claims older than twice the Retention:
// every record written under them has expired by then, unless a zombie kept
// writing for more than a whole Retention after losing the partition. Expired entries are
// deleted with tombstones, found on load and by sweeps as the map grows, so
// the changelog holds about the live keys. These rewrites ride along with
// later produce rounds, at most a thousand per round.
//
// Release drops a partition's map; Close closes the clients. Each Assign
// and each read-back fetch their one changelog partition from its leader
// through the store's client: no client of their own, which would read the
// metadata of every partition of the changelog before its first fetch.
package kafkastore
