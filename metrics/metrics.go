// Package metrics exports a kbatch consumer's counters to Prometheus.
//
// It is a package of its own so that services that do not use Prometheus do
// not build it. Client-level metrics (bytes fetched, connections, buffered
// records inside franz-go) come from franz-go's kprom plugin, passed through
// consumer.Config.ClientOpts:
//
//	kp := kprom.NewMetrics("kbatch_client")
//	c, _ := consumer.New(consumer.Config{..., ClientOpts: []kgo.Opt{kgo.WithHooks(kp)}}, h)
//	prometheus.MustRegister(kp, metrics.NewCollector(c, prometheus.Labels{"service": "orders-etl"}))
//
// The collector reads consumer.Stats at scrape time: it adds nothing to the
// record path.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kbatch/kbatch/consumer"
)

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(s consumer.Stats) float64
}

// Collector is a prometheus.Collector of one consumer's Stats.
type Collector struct {
	c       *consumer.Consumer
	metrics []metric
	flushes *prometheus.Desc // kbatch_flushes_total{reason}
}

// NewCollector returns a collector for c; labels are added to every metric
// (e.g. the service or member name).
func NewCollector(c *consumer.Consumer, labels prometheus.Labels) *Collector {
	m := func(name, help string, kind prometheus.ValueType, v func(consumer.Stats) int64) metric {
		return metric{
			desc:  prometheus.NewDesc("kbatch_"+name, help, nil, labels),
			kind:  kind,
			value: func(s consumer.Stats) float64 { return float64(v(s)) },
		}
	}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	return &Collector{c: c, metrics: []metric{
		m("records_total", "Records handed to a handler that succeeded for them (not the skipped or dead-lettered ones).", counter, func(s consumer.Stats) int64 { return s.Records }),
		m("batches_total", "Successful handler calls.", counter, func(s consumer.Stats) int64 { return s.Batches }),
		m("handler_errors_total", "Failed handler calls, each retry counted.", counter, func(s consumer.Stats) int64 { return s.HandlerErrors }),
		m("commits_total", "Offset commit requests that succeeded.", counter, func(s consumer.Stats) int64 { return s.Commits }),
		m("commit_errors_total", "Failed offset commit requests or partitions.", counter, func(s consumer.Stats) int64 { return s.CommitErrors }),
		m("rebalances_total", "Group sessions this member joined.", counter, func(s consumer.Stats) int64 { return s.Rebalances }),
		m("partitions_assigned_total", "Partitions assigned to this member.", counter, func(s consumer.Stats) int64 { return s.PartitionsAssigned }),
		m("partitions_revoked_total", "Partitions revoked from this member (drained and committed).", counter, func(s consumer.Stats) int64 { return s.PartitionsRevoked }),
		m("partitions_lost_total", "Partitions lost by this member (nothing committed).", counter, func(s consumer.Stats) int64 { return s.PartitionsLost }),
		m("fetch_pauses_total", "Times a partition's fetching was paused because its worker was full.", counter, func(s consumer.Stats) int64 { return s.Pauses }),
		m("skipped_total", "Records not handed out because their idempotency key was done.", counter, func(s consumer.Stats) int64 { return s.Skipped }),
		m("dead_lettered_total", "Records written to the dead-letter topic.", counter, func(s consumer.Stats) int64 { return s.DeadLettered }),
		m("dead_letter_errors_total", "Failed dead-letter writes, each retry counted.", counter, func(s consumer.Stats) int64 { return s.DeadLetterErrors }),
		m("store_errors_total", "Failed dedupe store calls, each retry counted.", counter, func(s consumer.Stats) int64 { return s.StoreErrors }),
		m("buffered_records", "Records held: fetched and not yet handled.", gauge, func(s consumer.Stats) int64 { return s.BufferedRecords }),
		m("buffered_bytes", "Bytes (keys and values) of the records held.", gauge, func(s consumer.Stats) int64 { return s.BufferedBytes }),
		m("owned_partitions", "Partitions this member owns now.", gauge, func(s consumer.Stats) int64 { return s.OwnedPartitions }),
		m("missing_topics", "Configured topics that did not exist at the last look-up.", gauge, func(s consumer.Stats) int64 { return s.MissingTopics }),
		m("fetch_errors_total", "Errors the client reported while polling (unknown topic, not authorized, ...).", counter, func(s consumer.Stats) int64 { return s.FetchErrors }),
		m("abandoned_workers_total", "Partition workers given up on because their handler ignored its cancelled context.", counter, func(s consumer.Stats) int64 { return s.Abandoned }),
		m("fetch_max_bytes", "The fetch size kbatch asks the client for, from the byte bound and the compression ratio.", gauge, func(s consumer.Stats) int64 { return s.FetchMaxBytes }),
	},
		flushes: prometheus.NewDesc("kbatch_flushes_total",
			"Batches cut, by reason: records, bytes, wait (MaxWait), buffer (the member's buffer was full), idle (MaxWait off and nothing arrived), revoke, close.",
			[]string{"reason"}, labels),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	ch <- c.flushes
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.c.Stats()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(s))
	}
	for _, r := range consumer.FlushReasons {
		ch <- prometheus.MustNewConstMetric(c.flushes, prometheus.CounterValue, float64(s.Flushes[r]), r.String())
	}
}
