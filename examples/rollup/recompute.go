package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbatch/kbatch/kbatchtest"
)

// tickKey is the key of the demo's closing events; their own windows stay
// open and are left out of the checks.
const tickKey = "tick"

// result is what the rollup tables hold, or what they should.
type result struct {
	minute map[winKey]agg   // closed windows
	late   map[string]int64 // "partition/offset" -> value
}

func (r result) windows() int { return len(r.minute) }

// recompute reads the whole topic and applies the policy of rollup.go to
// each partition's records in offset order, independently of the service:
// every record counted once, in its window or, when its window had
// closed when it came (the watermark then was at least the window's end
// plus lateness), as late.
func recompute(ctx context.Context, k *kbatchtest.Cluster, topic string, lateness time.Duration) (result, error) {
	end, err := k.EndOffsets(ctx, topic)
	if err != nil {
		return result{}, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return result{}, err
	}
	defer cl.Close()
	byPart := map[int32][]*kgo.Record{}
	remaining := 0
	for _, n := range end {
		remaining += int(n)
	}
	for remaining > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return result{}, fmt.Errorf("reading %s back: %w", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			byPart[r.Partition] = append(byPart[r.Partition], r)
			remaining--
		})
	}
	res := result{minute: map[winKey]agg{}, late: map[string]int64{}}
	lateMs := lateness.Milliseconds()
	for p, recs := range byPart {
		sort.Slice(recs, func(i, j int) bool { return recs[i].Offset < recs[j].Offset })
		watermark := int64(noWatermark)
		for _, r := range recs {
			v, err := strconv.ParseInt(string(r.Value), 10, 64)
			if err != nil || string(r.Key) == tickKey {
				if ev := r.Timestamp.UnixMilli(); ev > watermark {
					watermark = ev
				}
				continue
			}
			ev := r.Timestamp.UnixMilli()
			k := winKey{key: string(r.Key), start: windowOf(ev)}
			if k.start+windowMillis+lateMs <= watermark {
				res.late[fmt.Sprintf("%d/%d", p, r.Offset)] = v
				continue
			}
			m := res.minute[k]
			res.minute[k] = agg{m.count + 1, m.sum + v}
			watermark = max(watermark, ev)
		}
	}
	return res, nil
}

// readResult reads the closed windows and late records from the tables.
func readResult(ctx context.Context, pool *pgxpool.Pool, t tables) (result, error) {
	res := result{minute: map[winKey]agg{}, late: map[string]int64{}}
	rows, err := pool.Query(ctx, `SELECT key, (extract(epoch FROM window_start) * 1000)::bigint, count, sum FROM `+t.minute+` WHERE key <> $1`, tickKey)
	if err != nil {
		return res, err
	}
	for rows.Next() {
		var k winKey
		var a agg
		if err := rows.Scan(&k.key, &k.start, &a.count, &a.sum); err != nil {
			rows.Close()
			return res, err
		}
		res.minute[k] = a
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, err
	}
	rows, err = pool.Query(ctx, `SELECT partition, kafka_offset, value FROM `+t.late)
	if err != nil {
		return res, err
	}
	defer rows.Close()
	for rows.Next() {
		var p int32
		var off, v int64
		if err := rows.Scan(&p, &off, &v); err != nil {
			return res, err
		}
		res.late[fmt.Sprintf("%d/%d", p, off)] = v
	}
	return res, rows.Err()
}

// diff says how got differs from the recomputation want, "" if it does not:
// the same closed windows with the same totals and the same late records.
func (want result) diff(got result) string {
	for k, a := range want.minute {
		if got.minute[k] != a {
			return fmt.Sprintf("window %s %s: got %+v, want %+v", k.key, time.UnixMilli(k.start).UTC().Format(time.TimeOnly), got.minute[k], a)
		}
	}
	for k := range got.minute {
		if _, ok := want.minute[k]; !ok {
			return fmt.Sprintf("window %s %d written but never closed in the recomputation", k.key, k.start)
		}
	}
	if len(got.late) != len(want.late) {
		return fmt.Sprintf("%d late records, want %d", len(got.late), len(want.late))
	}
	for id, v := range want.late {
		if g, ok := got.late[id]; !ok || g != v {
			return fmt.Sprintf("late record %s missing or wrong", id)
		}
	}
	return ""
}
