package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/offsets"
)

// windowMillis is the window length: one event-time minute.
const windowMillis = int64(time.Minute / time.Millisecond)

// rollup counts and sums each key's values per event-time minute.
//
// Event time is the record's timestamp (the producer's CreateTime). Each
// partition has a watermark: the greatest event time seen in it so far, in
// offset order. A window [s, s+1m) closes when the watermark reaches
// s+1m+lateness; it is then written to <prefix>minute with one upsert, once.
// The late-record policy:
//   - a record whose window is still open (event time at most lateness
//     behind the end of its window, relative to the watermark) updates its
//     window, whatever its order of arrival;
//   - a record whose window already closed is not added to it: it is
//     counted (rollup_late_records_total) and written to <prefix>late.
//
// Crash safety: everything the consumer decides is a function of the
// records in offset order, so a partition's state is checkpointed in the
// transaction that writes its closed windows and late records (and on
// revoke, on close, and every -checkpoint): the partition's next offset,
// watermark, open windows and fencing token. After a crash or a
// rebalance the new owner loads the checkpoint (StartOffsets) and reads
// again from its offset: the same windows close with the same totals, and
// nothing is written twice. A transaction under an older token is refused,
// as in examples/pg-sink.
type rollup struct {
	pool       *pgxpool.Pool
	group      string
	lateness   int64         // milliseconds
	checkpoint time.Duration // longest time between checkpoints of a busy partition
	t          tables

	mu    sync.Mutex
	parts map[offsets.Partition]*partState // loaded by startOffsets

	windows, late, fenced prometheus.Counter

	beforeCommit func() // crash-test seam: inside a save, before it commits
}

type tables struct{ minute, late, open, offsets string } // quoted

func quote(name string) string { return pgx.Identifier{name}.Sanitize() }

// winKey names one key's window by its start, in Unix milliseconds.
type winKey struct {
	key   string
	start int64
}

type agg struct{ count, sum int64 }

// partState is one partition's state under one ownership.
type partState struct {
	token     consumer.FencingToken
	next      int64 // next offset to take into account; -1: from the first record
	watermark int64 // greatest event time seen, Unix ms; math.MinInt64 before any
	open      map[winKey]agg
	saved     time.Time // last checkpoint
}

func (p *partState) clone() *partState {
	c := *p
	c.open = maps.Clone(p.open)
	return &c
}

type lateRecord struct {
	key           string
	event, offset int64
	value         int64
}

var errFenced = errors.New("rollup: refused: the partition has a newer owner")

func newRollup(pool *pgxpool.Pool, group, prefix string, lateness, checkpoint time.Duration) *rollup {
	return &rollup{
		pool: pool, group: group, lateness: lateness.Milliseconds(), checkpoint: checkpoint,
		t: tables{
			minute: quote(prefix + "minute"), late: quote(prefix + "late"),
			open: quote(prefix + "open"), offsets: quote(prefix + "offsets"),
		},
		parts: make(map[offsets.Partition]*partState),
		windows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rollup_windows_written_total", Help: "Key windows closed and written (one upsert each).",
		}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rollup_late_records_total", Help: "Records whose window had closed: written to the late table.",
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rollup_fenced_transactions_total", Help: "Transactions refused because the partition has a newer owner.",
		}),
	}
}

func (r *rollup) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.windows, r.late, r.fenced}
}

func (r *rollup) setup(ctx context.Context) error {
	_, err := r.pool.Exec(ctx, `
CREATE TABLE IF NOT EXISTS `+r.t.minute+` (
	key          text        NOT NULL,
	window_start timestamptz NOT NULL,
	count        bigint      NOT NULL,
	sum          bigint      NOT NULL,
	PRIMARY KEY (key, window_start)
);
CREATE TABLE IF NOT EXISTS `+r.t.late+` (
	topic        text        NOT NULL,
	partition    int         NOT NULL,
	kafka_offset bigint      NOT NULL,
	key          text        NOT NULL,
	event_time   timestamptz NOT NULL,
	value        bigint      NOT NULL,
	PRIMARY KEY (topic, partition, kafka_offset)
);
CREATE TABLE IF NOT EXISTS `+r.t.open+` (
	consumer_group text   NOT NULL,
	topic          text   NOT NULL,
	partition      int    NOT NULL,
	key            text   NOT NULL,
	window_start   bigint NOT NULL,
	count          bigint NOT NULL,
	sum            bigint NOT NULL,
	PRIMARY KEY (consumer_group, topic, partition, key, window_start)
);
CREATE TABLE IF NOT EXISTS `+r.t.offsets+` (
	consumer_group text   NOT NULL,
	topic          text   NOT NULL,
	partition      int    NOT NULL,
	next_offset    bigint NOT NULL,
	watermark      bigint NOT NULL,
	token          int    NOT NULL,
	PRIMARY KEY (consumer_group, topic, partition)
);`)
	if err != nil {
		return fmt.Errorf("rollup: making tables: %w", err)
	}
	return nil
}

// noWatermark is the watermark before any record.
const noWatermark = -1 << 62

// startOffsets claims the partitions under token and loads their
// checkpoints: the consumer's StartOffsets.
func (r *rollup) startOffsets(ctx context.Context, token consumer.FencingToken, tps []offsets.Partition) (map[offsets.Partition]int64, error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it does nothing
	states := make(map[offsets.Partition]*partState, len(tps))
	out := make(map[offsets.Partition]int64, len(tps))
	for _, tp := range tps {
		st := &partState{token: token, open: map[winKey]agg{}, saved: time.Now()}
		err := tx.QueryRow(ctx, `
INSERT INTO `+r.t.offsets+` (consumer_group, topic, partition, next_offset, watermark, token) VALUES ($1, $2, $3, -1, $5, $4)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET token = EXCLUDED.token
	WHERE `+r.t.offsets+`.token <= EXCLUDED.token
RETURNING next_offset, watermark`, r.group, tp.Topic, tp.Partition, int32(token), int64(noWatermark)).Scan(&st.next, &st.watermark)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("rollup: claiming %s under token %d: a newer token is stored (a stale assignment, or the group was made again: reset its tokens)", tp, token)
		}
		if err != nil {
			return nil, fmt.Errorf("rollup: claiming %s: %w", tp, err)
		}
		rows, err := tx.Query(ctx, `SELECT key, window_start, count, sum FROM `+r.t.open+`
WHERE consumer_group = $1 AND topic = $2 AND partition = $3`, r.group, tp.Topic, tp.Partition)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var k winKey
			var a agg
			if err := rows.Scan(&k.key, &k.start, &a.count, &a.sum); err != nil {
				rows.Close()
				return nil, err
			}
			st.open[k] = a
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		states[tp] = st
		out[tp] = st.next
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	r.mu.Lock()
	maps.Copy(r.parts, states)
	r.mu.Unlock()
	return out, nil
}

// windowOf returns the start of the window of event time ms.
func windowOf(ms int64) int64 {
	w := ms - ms%windowMillis
	if ms < 0 && ms%windowMillis != 0 {
		w -= windowMillis
	}
	return w
}

// handle is the consumer's Handler.
func (r *rollup) handle(ctx context.Context, b *consumer.Batch) error {
	tp := offsets.Partition{Topic: b.Topic, Partition: b.Partition}
	r.mu.Lock()
	cur := r.parts[tp]
	r.mu.Unlock()
	if cur == nil || cur.token != b.Token() {
		return fmt.Errorf("rollup: no state loaded for %s under token %d", tp, b.Token())
	}
	// Work on a copy: a failed transaction leaves the state as it was for
	// the retry of the batch.
	st := cur.clone()
	closed := map[winKey]agg{}
	var late []lateRecord
	for _, rec := range b.Records {
		if rec.Offset < st.next {
			continue // taken into account before this checkpoint
		}
		st.next = rec.Offset + 1
		v, err := strconv.ParseInt(string(rec.Value), 10, 64)
		if err != nil {
			// Nothing to count: skipped, like a record of no interest.
			// (A service that must not skip one would return
			// consumer.Permanent and dead-letter it.)
			continue
		}
		ev := rec.Timestamp.UnixMilli()
		k := winKey{key: string(rec.Key), start: windowOf(ev)}
		if k.start+windowMillis+r.lateness <= st.watermark {
			late = append(late, lateRecord{key: k.key, event: ev, offset: rec.Offset, value: v})
			continue
		}
		a := st.open[k]
		st.open[k] = agg{count: a.count + 1, sum: a.sum + v}
		if ev > st.watermark {
			st.watermark = ev
			for ok, oa := range st.open {
				if ok.start+windowMillis+r.lateness <= st.watermark {
					closed[ok] = oa
					delete(st.open, ok)
				}
			}
		}
	}
	save := len(closed) > 0 || len(late) > 0 || b.Reason == consumer.FlushRevoke || b.Reason == consumer.FlushClose ||
		time.Since(st.saved) >= r.checkpoint
	if save {
		if err := r.save(ctx, b, st, closed, late); err != nil {
			return err
		}
		st.saved = time.Now()
		r.windows.Add(float64(len(closed)))
		r.late.Add(float64(len(late)))
	}
	r.mu.Lock()
	if r.parts[tp] == cur {
		r.parts[tp] = st
	}
	r.mu.Unlock()
	return nil
}

// save writes the closed windows and late records and checkpoints the
// partition, in one transaction under the batch's token.
func (r *rollup) save(ctx context.Context, b *consumer.Batch, st *partState, closed map[winKey]agg, late []lateRecord) error {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it does nothing
	var stored int32
	err = tx.QueryRow(ctx, `SELECT token FROM `+r.t.offsets+` WHERE consumer_group = $1 AND topic = $2 AND partition = $3 FOR UPDATE`,
		r.group, b.Topic, b.Partition).Scan(&stored)
	if err != nil {
		return fmt.Errorf("rollup: locking %s/%d: %w", b.Topic, b.Partition, err)
	}
	if stored > int32(b.Token()) {
		r.fenced.Inc()
		return fmt.Errorf("%w: %s/%d stored token %d, batch token %d", errFenced, b.Topic, b.Partition, stored, b.Token())
	}
	var q pgx.Batch
	if len(closed) > 0 {
		keys, starts, counts, sums := columns(closed)
		q.Queue(`INSERT INTO `+r.t.minute+` AS m (key, window_start, count, sum)
SELECT k, to_timestamp(s / 1000.0), c, x FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(k, s, c, x)
ON CONFLICT (key, window_start) DO UPDATE SET count = m.count + EXCLUDED.count, sum = m.sum + EXCLUDED.sum`,
			keys, starts, counts, sums)
	}
	if len(late) > 0 {
		keys, events, offs, values := make([]string, len(late)), make([]int64, len(late)), make([]int64, len(late)), make([]int64, len(late))
		for i, l := range late {
			keys[i], events[i], offs[i], values[i] = l.key, l.event, l.offset, l.value
		}
		q.Queue(`INSERT INTO `+r.t.late+` (topic, partition, kafka_offset, key, event_time, value)
SELECT $1, $2, o, k, to_timestamp(e / 1000.0), v FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::bigint[]) AS u(o, k, e, v)`,
			b.Topic, b.Partition, offs, keys, events, values)
	}
	q.Queue(`DELETE FROM `+r.t.open+` WHERE consumer_group = $1 AND topic = $2 AND partition = $3`, r.group, b.Topic, b.Partition)
	if len(st.open) > 0 {
		keys, starts, counts, sums := columns(st.open)
		q.Queue(`INSERT INTO `+r.t.open+` (consumer_group, topic, partition, key, window_start, count, sum)
SELECT $1, $2, $3, k, s, c, x FROM unnest($4::text[], $5::bigint[], $6::bigint[], $7::bigint[]) AS u(k, s, c, x)`,
			r.group, b.Topic, b.Partition, keys, starts, counts, sums)
	}
	q.Queue(`UPDATE `+r.t.offsets+` SET next_offset = $4, watermark = $5, token = $6
WHERE consumer_group = $1 AND topic = $2 AND partition = $3`, r.group, b.Topic, b.Partition, st.next, st.watermark, int32(b.Token()))
	if err := tx.SendBatch(ctx, &q).Close(); err != nil {
		return fmt.Errorf("rollup: saving %s/%d: %w", b.Topic, b.Partition, err)
	}
	if r.beforeCommit != nil {
		r.beforeCommit()
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("rollup: committing %s/%d: %w", b.Topic, b.Partition, err)
	}
	return nil
}

func columns(m map[winKey]agg) (keys []string, starts, counts, sums []int64) {
	for k, a := range m {
		keys = append(keys, k.key)
		starts = append(starts, k.start)
		counts = append(counts, a.count)
		sums = append(sums, a.sum)
	}
	return
}

// event makes a record of key with value v at event time at.
func event(key string, v int64, at time.Time) *kgo.Record {
	return &kgo.Record{Key: []byte(key), Value: strconv.AppendInt(nil, v, 10), Timestamp: at}
}
