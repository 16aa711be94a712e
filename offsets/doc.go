// Package offsets decides which offsets a consumer may commit and when.
//
// The package is plural on purpose: it keeps the name "offset" free for
// variables.
//
// A [Tracker] follows one partition. Work is begun in offset order as spans
// (a batch is one span) and may complete in any order; [Tracker.Watermark] is
// the contiguous watermark, the next offset to commit: every offset below it
// was begun and completed. It holds no clock and no client.
//
// A [Manager] is the windowing offset manager. It owns one tracker per
// assigned partition and commits the watermarks of all of them when
// EveryRecords records completed since the last commit, or when Interval
// passed and some watermark moved, and always when a partition is revoked
// (see [Manager.CommitAndForget]) and on close. It never commits per record.
//
// Fencing: [Manager.Forget] and [Manager.CommitAndForget] take the same lock
// the committer holds while it builds and sends a commit, so once they return
// no commit for those partitions is in flight or will ever be sent. A
// partition whose commit is refused as fenced (stale generation or member
// epoch) is forgotten and reported through Config.OnFenced.
package offsets
