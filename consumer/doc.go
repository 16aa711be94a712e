// Package consumer is kbatch's runtime: a consumer group member that hands
// batches of records to a Handler, partition by partition, in offset order,
// and commits offsets through a windowing offset manager instead of per
// record.
//
//	c, err := consumer.New(consumer.Config{
//		Brokers: []string{"127.0.0.1:9092"},
//		Group:   "orders-etl",
//		Topics:  []string{"orders"},
//	}, func(ctx context.Context, b *consumer.Batch) error {
//		return sink.Write(ctx, b.Records) // one round trip per batch
//	})
//	if err != nil {
//		return err // a *ConfigError naming the bad field
//	}
//	return c.Run(ctx) // joins the group; at the end of ctx: drain, commit, leave
//
// How a record travels: the poll loop fetches at most as many records as the
// buffer bounds leave room for and routes each partition's records to that
// partition's worker goroutine; when handlers are slow (the poll loop waited
// for room), the partitions holding more than their share of the buffer are
// paused so the others keep flowing. The worker cuts batches (MaxRecords,
// MaxBytes, or MaxWait from the batch's first record) and calls the handler
// with one batch at a time. A failed batch (an error or a panic) is retried
// with exponential backoff until it succeeds; the partition waits, the others
// go on. A successful batch counts as complete for the offsets manager, which
// commits the contiguous watermark of every owned partition when
// Commit.EveryRecords records completed since the last commit or
// Commit.Interval passed with progress.
//
// Rebalances (cooperative-sticky by default, or KIP-848): on revoke the
// partition stops being fed, its in-flight batch finishes within
// DrainTimeout, its watermark is committed synchronously, and only then does
// the rebalance go on. On loss (session timeout, fenced) the handler's
// context is cancelled at once and nothing more is committed for the
// partition. Close, or the end of Run's context, drains, commits and leaves
// the group.
//
// Ordering: by default (ByPartition) a partition's batches reach the handler
// one at a time. Config.Ordering ByKey handles the keys of a partition in
// parallel on Config.Concurrency goroutines, each key in offset order; its
// commits name the records completed beyond the watermark in the commit
// metadata, so a restart skips them. Resequence runs Config.Process
// concurrently and hands the results to the handler in offset order
// (Batch.Result). See docs/ordering.md.
//
// Delivery is at least once: a committed offset N means every record below N
// was handled successfully. After a crash the records since the last commit
// are delivered again.
//
// Offsets stored in the sink give an exactly-once effect: a handler that
// writes its results and the partition's next offset in one transaction sets
// Config.StartOffsets, which says where newly assigned partitions start, and
// checks Batch.Token, the partition's FencingToken, against the one stored,
// so that a member that lost the partition can no longer write (see
// Example_startOffsets and examples/pg-sink).
package consumer
