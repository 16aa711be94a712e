package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kbatch/kbatch/consumer"
)

// shipper is the downstream kbatch consumer: for each order it ships once.
// Shipping stands for a call to a system that cannot recognise a repeat (a
// carrier's API); it appends a row to <prefix>shipments, without a unique
// constraint, so that a repeat would show as a second row.
//
// Exactly once across a relay crash comes from the consumer's dedupe store:
// every record carries its outbox row id as its Idempotency-Key, a key is
// recorded done after the handler succeeded, and a later copy of a done key
// is not handed to the handler. Copies that arrive in one batch (the relay
// produced the run twice, back to back) are both new to the store: the
// handler ships the first and skips the rest by key.
type shipper struct {
	pool    *pgxpool.Pool
	t       tables
	shipped prometheus.Counter
}

func newShipper(pool *pgxpool.Pool, t tables) *shipper {
	return &shipper{pool: pool, t: t, shipped: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outbox_consumer_orders_shipped_total",
		Help: "Orders shipped by the downstream consumer.",
	})}
}

func (s *shipper) handle(ctx context.Context, b *consumer.Batch) error {
	seen := make(map[string]bool, len(b.Records))
	var outboxIDs, orderIDs []int64
	var bad error
	badAt := -1
	for i, r := range b.Records {
		key := b.Key(i)
		if seen[key] {
			continue
		}
		seen[key] = true
		id, err := strconv.ParseInt(strings.TrimPrefix(key, "outbox-"), 10, 64)
		if err != nil || !strings.HasPrefix(key, "outbox-") {
			bad, badAt = fmt.Errorf("idempotency key %q is not an outbox row id", key), i
			break
		}
		var m orderPlaced
		if err := json.Unmarshal(r.Value, &m); err != nil || m.Order <= 0 {
			bad, badAt = fmt.Errorf("outbox row %d: not an order: %v", id, err), i
			break
		}
		outboxIDs = append(outboxIDs, id)
		orderIDs = append(orderIDs, m.Order)
	}
	if len(outboxIDs) > 0 {
		if _, err := s.pool.Exec(ctx, `INSERT INTO `+s.t.shipments+` (outbox_id, order_id)
SELECT * FROM unnest($1::bigint[], $2::bigint[])`, outboxIDs, orderIDs); err != nil {
			return fmt.Errorf("outbox-consumer: shipping %d orders: %w", len(outboxIDs), err)
		}
		s.shipped.Add(float64(len(outboxIDs)))
	}
	if bad != nil {
		// The records before it are shipped; this one goes to the
		// dead-letter topic: no retry can make it an order.
		return consumer.FailedAt(badAt, consumer.Permanent(bad))
	}
	return nil
}

// shipmentStats summarizes the shipments table.
type shipmentStats struct {
	rows, distinct, repeated int64
}

func countShipments(ctx context.Context, pool *pgxpool.Pool, t tables) (shipmentStats, error) {
	var st shipmentStats
	err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT outbox_id),
	(SELECT count(*) FROM (SELECT 1 FROM `+t.shipments+` GROUP BY outbox_id HAVING count(*) > 1) AS r)
FROM `+t.shipments).Scan(&st.rows, &st.distinct, &st.repeated)
	if err != nil {
		return st, fmt.Errorf("counting shipments: %w", err)
	}
	return st, nil
}
