package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/dedupe"
)

// tables names the example's tables: <prefix>orders (the business rows),
// <prefix>outbox (the messages to send) and <prefix>shipments (the
// downstream side effect).
type tables struct {
	orders, outbox, shipments string // quoted
	unsent                    string // the outbox's partial index, quoted
	channel                   string // the NOTIFY channel: the outbox table's name
}

func newTables(prefix string) tables {
	return tables{
		orders:    quote(prefix + "orders"),
		outbox:    quote(prefix + "outbox"),
		shipments: quote(prefix + "shipments"),
		unsent:    quote(prefix + "outbox_unsent"),
		channel:   prefix + "outbox",
	}
}

func quote(name string) string { return pgx.Identifier{name}.Sanitize() }

// setup makes the tables if missing. The partial index keeps finding the
// unsent rows cheap however long the outbox's history grows.
func (t tables) setup(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, `
CREATE TABLE IF NOT EXISTS `+t.orders+` (
	id           bigserial   PRIMARY KEY,
	customer     text        NOT NULL,
	amount_cents bigint      NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS `+t.outbox+` (
	id         bigserial   PRIMARY KEY,
	topic      text        NOT NULL,
	key        text        NOT NULL,
	payload    bytea       NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	sent_at    timestamptz
);
CREATE INDEX IF NOT EXISTS `+t.unsent+` ON `+t.outbox+` (id) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS `+t.shipments+` (
	outbox_id  bigint      NOT NULL,
	order_id   bigint      NOT NULL,
	shipped_at timestamptz NOT NULL DEFAULT now()
);`)
	if err != nil {
		return fmt.Errorf("outbox-relay: making tables: %w", err)
	}
	return nil
}

// orderPlaced is the message an order puts in the outbox.
type orderPlaced struct {
	Order       int64  `json:"order"`
	Customer    string `json:"customer"`
	AmountCents int64  `json:"amount_cents"`
}

// placeOrder is the business transaction: the order row and its outbox row
// commit together or not at all, and the relay is notified at commit.
func placeOrder(ctx context.Context, pool *pgxpool.Pool, t tables, topic, customer string, amountCents int64) (int64, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it does nothing
	var id int64
	if err := tx.QueryRow(ctx, `INSERT INTO `+t.orders+` (customer, amount_cents) VALUES ($1, $2) RETURNING id`,
		customer, amountCents).Scan(&id); err != nil {
		return 0, err
	}
	payload, err := json.Marshal(orderPlaced{Order: id, Customer: customer, AmountCents: amountCents})
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+t.outbox+` (topic, key, payload) VALUES ($1, $2, $3)`,
		topic, customer, payload); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, t.channel); err != nil {
		return 0, err
	}
	return id, tx.Commit(ctx)
}

// relay moves outbox rows to Kafka in id order: it reads a run of unsent
// rows, produces them with the idempotent producer and waits for every
// acknowledgement, then marks them sent. A crash between produce and mark
// produces the run again on restart: each record carries its outbox row id
// as its Idempotency-Key, so the downstream consumer skips the copies.
//
// One relay is active per outbox (a PostgreSQL advisory lock): a second one
// waits, ready to take over, so the order of the rows is kept.
type relay struct {
	pool  *pgxpool.Pool
	cl    *kgo.Client
	t     tables
	batch int
	poll  time.Duration // longest wait without a notification

	backlog  prometheus.Gauge
	oldest   prometheus.Gauge
	relayed  prometheus.Counter
	produced prometheus.Counter

	// afterProduce is a crash-test seam: called after a run was produced
	// and before it is marked sent.
	afterProduce func(n int)
}

func newRelay(pool *pgxpool.Pool, cl *kgo.Client, t tables, batch int, poll time.Duration) *relay {
	return &relay{
		pool: pool, cl: cl, t: t, batch: batch, poll: poll,
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_backlog_rows",
			Help: "Outbox rows not yet sent to Kafka.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_oldest_unsent_seconds",
			Help: "Age of the oldest outbox row not yet sent (0 when none).",
		}),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_rows_sent_total",
			Help: "Outbox rows produced and marked sent.",
		}),
		produced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_records_produced_total",
			Help: "Records produced, copies after a crash between produce and mark included.",
		}),
	}
}

func (r *relay) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.backlog, r.oldest, r.relayed, r.produced}
}

// lockKey is the advisory lock of one outbox table.
func (r *relay) lockKey() string { return "kbatch-outbox-relay:" + r.t.outbox }

// run relays until ctx ends.
func (r *relay) run(ctx context.Context) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	// Become the one active relay.
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1))`, r.lockKey()).Scan(&got); err != nil {
			return fmt.Errorf("outbox-relay: taking the relay lock: %w", err)
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	// The session ends with the connection: the lock goes with it. Close
	// it rather than return it to the pool holding the lock.
	defer conn.Conn().Close(context.WithoutCancel(ctx)) //nolint:errcheck
	if _, err := conn.Exec(ctx, `LISTEN `+quote(r.t.channel)); err != nil {
		return fmt.Errorf("outbox-relay: LISTEN: %w", err)
	}
	for {
		n, err := r.once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if err := r.measure(ctx); err != nil && ctx.Err() == nil {
			return err
		}
		if n == r.batch {
			continue // more waiting
		}
		wctx, cancel := context.WithTimeout(ctx, r.poll)
		_, err = conn.Conn().WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("outbox-relay: waiting for a notification: %w", err)
		}
	}
}

// once relays one run of at most batch unsent rows and reports how many.
func (r *relay) once(ctx context.Context) (int, error) {
	rows, err := r.pool.Query(ctx, `SELECT id, topic, key, payload FROM `+r.t.outbox+`
WHERE sent_at IS NULL ORDER BY id LIMIT $1`, r.batch)
	if err != nil {
		return 0, fmt.Errorf("outbox-relay: reading the outbox: %w", err)
	}
	var (
		recs []*kgo.Record
		ids  []int64
	)
	for rows.Next() {
		var (
			id         int64
			topic, key string
			payload    []byte
		)
		if err := rows.Scan(&id, &topic, &key, &payload); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, id)
		recs = append(recs, &kgo.Record{
			Topic: topic, Key: []byte(key), Value: payload,
			Headers: []kgo.RecordHeader{{Key: dedupe.DefaultHeader, Value: []byte(outboxKey(id))}},
		})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("outbox-relay: reading the outbox: %w", err)
	}
	if len(recs) == 0 {
		return 0, nil
	}
	if err := r.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return 0, fmt.Errorf("outbox-relay: producing %d rows from id %d: %w", len(recs), ids[0], err)
	}
	r.produced.Add(float64(len(recs)))
	if r.afterProduce != nil {
		r.afterProduce(len(recs))
	}
	if _, err := r.pool.Exec(ctx, `UPDATE `+r.t.outbox+` SET sent_at = now() WHERE id = ANY($1)`, ids); err != nil {
		return 0, fmt.Errorf("outbox-relay: marking %d rows sent: %w", len(ids), err)
	}
	r.relayed.Add(float64(len(ids)))
	return len(recs), nil
}

// measure updates the backlog gauges.
func (r *relay) measure(ctx context.Context) error {
	var (
		n   int64
		age float64
	)
	err := r.pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM `+r.t.outbox+` WHERE sent_at IS NULL`).Scan(&n, &age)
	if err != nil {
		return fmt.Errorf("outbox-relay: measuring the backlog: %w", err)
	}
	r.backlog.Set(float64(n))
	r.oldest.Set(age)
	return nil
}

// outboxKey is the idempotency key of outbox row id.
func outboxKey(id int64) string { return "outbox-" + strconv.FormatInt(id, 10) }
