//go:build !memchild

package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/offsets"
)

// pgDSNEnv names the PostgreSQL of the pg scenarios; without it they are
// not in the table.
const pgDSNEnv = "KBATCH_PG_DSN"

// pgScenarios are the PostgreSQL sink scenarios, when KBATCH_PG_DSN is set:
// rows/s into a table with kbatch's batches (one transaction per batch of
// 1000: a multi-row upsert plus the partition's offset and fencing token,
// as examples/pg-sink does) against the per-record loop (one INSERT, one
// commit, per record).
func pgScenarios() []Scenario {
	if os.Getenv(pgDSNEnv) == "" {
		return nil
	}
	return []Scenario{
		{Key: "kbatch-pg-sink", Name: "kbatch into PostgreSQL, 1000-row upsert + offset per transaction", Run: runKbatchPgSink},
		{Key: "pg-per-record", Name: "franz-go into PostgreSQL, INSERT + commit per record", Subset: true, Run: runPgPerRecord},
	}
}

// pgTables makes the run's own tables (named from its group) and returns
// their quoted names and a function that drops them.
func pgTables(ctx context.Context, env *Env) (*pgxpool.Pool, string, string, func(), error) {
	pool, err := pgxpool.New(ctx, os.Getenv(pgDSNEnv))
	if err != nil {
		return nil, "", "", nil, err
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(env.Group))
	name := fmt.Sprintf("bench_%x", h.Sum64())
	rows, offs := pgx.Identifier{name + "_rows"}.Sanitize(), pgx.Identifier{name + "_offsets"}.Sanitize()
	_, err = pool.Exec(ctx, `
CREATE TABLE `+rows+` (id text PRIMARY KEY, kafka_offset bigint NOT NULL, value bytea);
CREATE TABLE `+offs+` (topic text, partition int, next_offset bigint NOT NULL, token int NOT NULL, PRIMARY KEY (topic, partition));`)
	if err != nil {
		pool.Close()
		return nil, "", "", nil, fmt.Errorf("making the bench tables: %w", err)
	}
	drop := func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+rows+", "+offs)
		pool.Close()
	}
	return pool, rows, offs, drop, nil
}

func rowID(r *kgo.Record) string { return fmt.Sprintf("%d/%d", r.Partition, r.Offset) }

// runKbatchPgSink is kbatch with its defaults (batches of up to 1000) and
// StartOffsets, each batch one transaction: lock and check the partition's
// offset row, upsert the rows with one statement, store the next offset.
func runKbatchPgSink(ctx context.Context, env *Env) (Outcome, error) {
	pool, rows, offs, drop, err := pgTables(ctx, env)
	if err != nil {
		return Outcome{OwnCommits: -1}, err
	}
	defer drop()
	cfg := kbatchConfig(env)
	cfg.StartOffsets = func(ctx context.Context, token consumer.FencingToken, tps []offsets.Partition) (map[offsets.Partition]int64, error) {
		out := make(map[offsets.Partition]int64, len(tps))
		for _, tp := range tps {
			var next int64
			err := pool.QueryRow(ctx, `INSERT INTO `+offs+` VALUES ($1, $2, -1, $3)
ON CONFLICT (topic, partition) DO UPDATE SET token = EXCLUDED.token WHERE `+offs+`.token <= EXCLUDED.token
RETURNING next_offset`, tp.Topic, tp.Partition, int32(token)).Scan(&next)
			if err != nil {
				return nil, err
			}
			out[tp] = next
		}
		return out, nil
	}
	return runKbatchWith(ctx, env, cfg, func(ctx context.Context, b *consumer.Batch) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it does nothing
		var stored int32
		if err := tx.QueryRow(ctx, `SELECT token FROM `+offs+` WHERE topic = $1 AND partition = $2 FOR UPDATE`,
			b.Topic, b.Partition).Scan(&stored); err != nil {
			return err
		}
		if stored > int32(b.Token()) {
			return fmt.Errorf("fenced: stored token %d, batch token %d", stored, b.Token())
		}
		ids := make([]string, len(b.Records))
		offsets := make([]int64, len(b.Records))
		values := make([][]byte, len(b.Records))
		for i, r := range b.Records {
			ids[i], offsets[i], values[i] = rowID(r), r.Offset, r.Value
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+rows+` AS t SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
ON CONFLICT (id) DO UPDATE SET kafka_offset = EXCLUDED.kafka_offset, value = EXCLUDED.value`, ids, offsets, values); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE `+offs+` SET next_offset = $3 WHERE topic = $1 AND partition = $2`,
			b.Topic, b.Partition, b.LastOffset()+1); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		env.Check.MarkRecords(b.Partition, b.Records)
		return nil
	})
}

// runPgPerRecord is the per-record loop: a franz-go poll loop (auto-commit)
// that writes each record with its own INSERT, committed on its own. It
// reads only the subset the checker expects.
func runPgPerRecord(ctx context.Context, env *Env) (Outcome, error) {
	pool, rows, _, drop, err := pgTables(ctx, env)
	if err != nil {
		return Outcome{OwnCommits: -1}, err
	}
	defer drop()
	cl, err := kgo.NewClient(franzOpts(env)...)
	if err != nil {
		return Outcome{OwnCommits: -1}, err
	}
	defer cl.Close()
	ctx, stop := stopWhenComplete(ctx, env.Check)
	defer stop()
	var inserts int64
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			break
		}
		if err := fetchError(fetches); err != nil {
			return Outcome{OwnCommits: -1}, err
		}
		var insertErr error
		fetches.EachRecord(func(r *kgo.Record) {
			if insertErr != nil || !env.Check.Expects(r.Partition, r.Offset) {
				return
			}
			if _, err := pool.Exec(ctx, `INSERT INTO `+rows+` VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET kafka_offset = EXCLUDED.kafka_offset, value = EXCLUDED.value`, rowID(r), r.Offset, r.Value); err != nil {
				insertErr = err
				return
			}
			inserts++
			env.Check.MarkOne(r.Partition, r.Offset, len(r.Key)+len(r.Value))
		})
		if insertErr != nil {
			if ctx.Err() != nil {
				break
			}
			return Outcome{OwnCommits: -1}, fmt.Errorf("inserting: %w", insertErr)
		}
	}
	return Outcome{OwnCommits: -1, Client: map[string]int64{"transactions": inserts}}, nil
}
