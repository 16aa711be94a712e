package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/offsets"
)

// sink writes batches into PostgreSQL with an exactly-once effect: each
// batch is one transaction that upserts its rows and stores the partition's
// next offset and fencing token; a transaction under an older token than
// the stored one is refused.
//
// Tables (made by setup if missing):
//
//	<offsets>(consumer_group, topic, partition, next_offset, token)  one row per partition
//	<rows>(id, topic, partition, kafka_offset, value, applied)       one row per record id
//
// A row's id is its record's key, or topic/partition/offset for a record
// without one; the row holds the last record of that id, and applied counts
// the records of that id written (so 1 for every row when ids are unique:
// the check of the crash test).
type sink struct {
	pool    *pgxpool.Pool
	group   string
	rows    string // quoted table names
	offsets string

	fenced  prometheus.Counter
	written prometheus.Counter
	txTime  prometheus.Histogram

	// Crash-test seams: beforeBegin is called with each batch before its
	// transaction begins and returns the context the transaction runs
	// under; beforeCommit inside the transaction before it commits.
	beforeBegin  func(context.Context, *consumer.Batch) context.Context
	beforeCommit func(*consumer.Batch)
}

// errFenced is returned by the handler when the partition's stored token is
// greater than the batch's: another member owns the partition now. The
// consumer retries the batch until the partition is revoked or lost, which
// follows soon; nothing of it was written.
var errFenced = errors.New("pg-sink: refused: the partition has a newer owner")

func newSink(pool *pgxpool.Pool, group, rowsTable, offsetsTable string) *sink {
	return &sink{
		pool:    pool,
		group:   group,
		rows:    quote(rowsTable),
		offsets: quote(offsetsTable),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pg_sink_fenced_transactions_total",
			Help: "Batch transactions refused because the partition's stored fencing token was newer (a zombie's writes).",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pg_sink_records_written_total",
			Help: "Records written to PostgreSQL in committed transactions.",
		}),
		txTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pg_sink_transaction_seconds",
			Help:    "Duration of one batch's transaction, begin to commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
}

// collectors are the sink's own metrics.
func (s *sink) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.fenced, s.written, s.txTime}
}

// setup makes the tables if missing.
func (s *sink) setup(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `
CREATE TABLE IF NOT EXISTS `+s.offsets+` (
	consumer_group text   NOT NULL,
	topic          text   NOT NULL,
	partition      int    NOT NULL,
	next_offset    bigint NOT NULL,
	token          int    NOT NULL,
	PRIMARY KEY (consumer_group, topic, partition)
);
CREATE TABLE IF NOT EXISTS `+s.rows+` (
	id           text   PRIMARY KEY,
	topic        text   NOT NULL,
	partition    int    NOT NULL,
	kafka_offset bigint NOT NULL,
	value        bytea,
	applied      int    NOT NULL
);`)
	if err != nil {
		return fmt.Errorf("pg-sink: making tables: %w", err)
	}
	return nil
}

// startOffsets is the consumer's StartOffsets: in one transaction it claims
// the partitions under token (the stored token is raised to it, so from now
// on the previous owner's transactions are refused) and returns where each
// starts: the stored next offset, or -1 (Kafka's committed offset) for a
// partition never written. A stored token above this member's is an error:
// either the assignment is already stale or the group was deleted and made
// again (its generations start at 1 again; see docs/postgres.md).
func (s *sink) startOffsets(ctx context.Context, token consumer.FencingToken, tps []offsets.Partition) (map[offsets.Partition]int64, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it does nothing
	var b pgx.Batch
	for _, tp := range tps {
		b.Queue(`
INSERT INTO `+s.offsets+` (consumer_group, topic, partition, next_offset, token) VALUES ($1, $2, $3, -1, $4)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET token = EXCLUDED.token
	WHERE `+s.offsets+`.token <= EXCLUDED.token
RETURNING next_offset`, s.group, tp.Topic, tp.Partition, int32(token))
	}
	res := tx.SendBatch(ctx, &b)
	out := make(map[offsets.Partition]int64, len(tps))
	for _, tp := range tps {
		var next int64
		if err := res.QueryRow().Scan(&next); err != nil {
			res.Close()
			if errors.Is(err, pgx.ErrNoRows) {
				stored, _ := s.storedToken(ctx, tp)
				return nil, fmt.Errorf("pg-sink: claiming %s under token %d: the stored token %s is newer (a stale assignment, or the group was made again: reset its tokens)", tp, token, stored)
			}
			return nil, fmt.Errorf("pg-sink: claiming %s: %w", tp, err)
		}
		out[tp] = next
	}
	if err := res.Close(); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("pg-sink: claiming %d partitions: %w", len(tps), err)
	}
	return out, nil
}

// storedToken reads a partition's stored token, for an error message.
func (s *sink) storedToken(ctx context.Context, tp offsets.Partition) (string, error) {
	var tok int32
	err := s.pool.QueryRow(ctx, `SELECT token FROM `+s.offsets+` WHERE consumer_group = $1 AND topic = $2 AND partition = $3`,
		s.group, tp.Topic, tp.Partition).Scan(&tok)
	if err != nil {
		return "?", err
	}
	return strconv.Itoa(int(tok)), nil
}

// handle is the consumer's Handler: one transaction per batch.
func (s *sink) handle(ctx context.Context, b *consumer.Batch) error {
	if s.beforeBegin != nil {
		ctx = s.beforeBegin(ctx, b)
	}
	start := time.Now()
	token := int32(b.Token())
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it does nothing

	// Lock the partition's offset row and check the token: a newer owner
	// (its StartOffsets raised the token) makes this member a zombie. The
	// row exists once StartOffsets ran; the insert covers a table emptied
	// by hand since.
	var lock pgx.Batch
	lock.Queue(`INSERT INTO `+s.offsets+` (consumer_group, topic, partition, next_offset, token) VALUES ($1, $2, $3, -1, $4)
ON CONFLICT DO NOTHING`, s.group, b.Topic, b.Partition, token)
	lock.Queue(`SELECT next_offset, token FROM `+s.offsets+` WHERE consumer_group = $1 AND topic = $2 AND partition = $3 FOR UPDATE`,
		s.group, b.Topic, b.Partition)
	res := tx.SendBatch(ctx, &lock)
	var next int64
	var stored int32
	_, err = res.Exec()
	if err == nil {
		err = res.QueryRow().Scan(&next, &stored)
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pg-sink: locking %s/%d: %w", b.Topic, b.Partition, err)
	}
	if stored > token {
		s.fenced.Inc()
		return fmt.Errorf("%w: %s/%d stored token %d, batch token %d (offsets %d-%d not written)",
			errFenced, b.Topic, b.Partition, stored, token, b.FirstOffset(), b.LastOffset())
	}

	// Rows: records below the stored next offset are already written (the
	// sink moved on since this worker's start); a record id seen twice in
	// the batch keeps its last value and counts both.
	type row struct {
		offset  int64
		value   []byte
		applied int32
	}
	byID := make(map[string]*row, len(b.Records))
	order := make([]string, 0, len(b.Records))
	for _, r := range b.Records {
		if r.Offset < next {
			continue
		}
		id := string(r.Key)
		if len(r.Key) == 0 {
			id = fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)
		}
		if w, ok := byID[id]; ok {
			w.offset, w.value = r.Offset, r.Value
			w.applied++
			continue
		}
		byID[id] = &row{offset: r.Offset, value: r.Value, applied: 1}
		order = append(order, id)
	}
	written := 0
	if len(order) > 0 {
		ids := make([]string, len(order))
		offs := make([]int64, len(order))
		vals := make([][]byte, len(order))
		applied := make([]int32, len(order))
		for i, id := range order {
			w := byID[id]
			ids[i], offs[i], vals[i], applied[i] = id, w.offset, w.value, w.applied
			written += int(w.applied)
		}
		_, err = tx.Exec(ctx, `
INSERT INTO `+s.rows+` AS t (id, topic, partition, kafka_offset, value, applied)
SELECT u.id, $1, $2, u.off, u.val, u.applied
FROM unnest($3::text[], $4::bigint[], $5::bytea[], $6::int[]) AS u(id, off, val, applied)
ON CONFLICT (id) DO UPDATE SET topic = EXCLUDED.topic, partition = EXCLUDED.partition,
	kafka_offset = EXCLUDED.kafka_offset, value = EXCLUDED.value, applied = t.applied + EXCLUDED.applied`,
			b.Topic, b.Partition, ids, offs, vals, applied)
		if err != nil {
			return fmt.Errorf("pg-sink: writing %d rows of %s/%d: %w", len(ids), b.Topic, b.Partition, err)
		}
	}
	_, err = tx.Exec(ctx, `UPDATE `+s.offsets+` SET next_offset = $4, token = $5
WHERE consumer_group = $1 AND topic = $2 AND partition = $3`,
		s.group, b.Topic, b.Partition, max(next, b.LastOffset()+1), token)
	if err != nil {
		return fmt.Errorf("pg-sink: storing the offset of %s/%d: %w", b.Topic, b.Partition, err)
	}
	if s.beforeCommit != nil {
		s.beforeCommit(b)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pg-sink: committing %s/%d: %w", b.Topic, b.Partition, err)
	}
	s.written.Add(float64(written))
	s.txTime.Observe(time.Since(start).Seconds())
	return nil
}

// quote quotes a table name for SQL.
func quote(name string) string { return pgx.Identifier{name}.Sanitize() }
