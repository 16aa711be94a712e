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
	"strconv"

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
	opts    options
	metrics []metric
	flushes *prometheus.Desc // kbatch_flushes_total{reason}

	topicRecords                     *prometheus.Desc // {topic, outcome}
	lagRecords, lagSeconds, stalled  *prometheus.Desc // {topic, partition} or {topic}
	ready, live                      *prometheus.Desc
	handler, batchRecords, batchSize *prometheus.Desc
	recordAge, commit                *prometheus.Desc
}

type options struct{ byTopic bool }

// Option changes what a Collector exports.
type Option func(*options)

// ByTopic exports the per-partition gauges per topic instead (lag in
// records summed, lag and stall in seconds as the maximum over the topic's
// partitions), for members that own thousands of partitions: the number of
// series then stays the number of topics.
func ByTopic() Option { return func(o *options) { o.byTopic = true } }

// NewCollector returns a collector for c; labels are added to every metric
// (e.g. the service or member name).
//
// Per-partition series (lag, stall) carry the labels topic and partition
// and are those of the partitions this member owns now: a partition revoked
// or lost disappears from the next scrape, and its new owner reports it from
// its own fetches, so lag stays right across rebalances.
func NewCollector(c *consumer.Consumer, labels prometheus.Labels, opts ...Option) *Collector {
	m := func(name, help string, kind prometheus.ValueType, v func(consumer.Stats) int64) metric {
		return metric{
			desc:  prometheus.NewDesc("kbatch_"+name, help, nil, labels),
			kind:  kind,
			value: func(s consumer.Stats) float64 { return float64(v(s)) },
		}
	}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	partLabels := []string{"topic", "partition"}
	if o.byTopic {
		partLabels = []string{"topic"}
	}
	desc := func(name, help string, vars ...string) *prometheus.Desc {
		return prometheus.NewDesc("kbatch_"+name, help, vars, labels)
	}
	return &Collector{c: c, opts: o,
		topicRecords: desc("topic_records_total", "Records by topic and outcome: handled (a handler succeeded), skipped (key done), dead_lettered, retried (records of failed handler calls).", "topic", "outcome"),
		lagRecords:   desc("partition_lag_records", "Records this member has still to handle: the high watermark of its last fetch minus the first offset not complete.", partLabels...),
		lagSeconds:   desc("partition_lag_seconds", "Age of the oldest record fetched and not yet complete (0 when none waits).", partLabels...),
		stalled:      desc("partition_stalled_seconds", "How long records have waited while the partition's watermark did not move (0 when none waits or it moves).", partLabels...),
		ready:        desc("ready", "1 when the member joined its group and loaded its partitions, else 0."),
		live:         desc("live", "1 when Run runs and no partition is stalled past StallTimeout, else 0."),
		handler:      desc("handler_duration_seconds", "Duration of each handler call."),
		batchRecords: desc("batch_records", "Records per batch cut."),
		batchSize:    desc("batch_bytes", "Bytes (keys and values) per batch cut."),
		recordAge:    desc("record_age_seconds", "Age of a batch's oldest record (its timestamp) when the batch is handed to the handler."),
		commit:       desc("commit_duration_seconds", "Duration of each offset commit request."),
		metrics: []metric{
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
			m("store_reassigns_total", "Times the dedupe store refused a partition (another store claimed it) and the worker claimed it again.", counter, func(s consumer.Stats) int64 { return s.StoreReassigns }),
			m("buffered_records", "Records held: fetched and not yet handled.", gauge, func(s consumer.Stats) int64 { return s.BufferedRecords }),
			m("buffered_bytes", "Bytes (keys and values) of the records held.", gauge, func(s consumer.Stats) int64 { return s.BufferedBytes }),
			m("owned_partitions", "Partitions this member owns now.", gauge, func(s consumer.Stats) int64 { return s.OwnedPartitions }),
			m("missing_topics", "Configured topics that did not exist at the last look-up.", gauge, func(s consumer.Stats) int64 { return s.MissingTopics }),
			m("fetch_errors_total", "Errors the client reported while polling (unknown topic, not authorized, ...).", counter, func(s consumer.Stats) int64 { return s.FetchErrors }),
			m("abandoned_workers_total", "Partition workers given up on because their handler ignored its cancelled context.", counter, func(s consumer.Stats) int64 { return s.Abandoned }),
			m("fetch_max_bytes", "The fetch size kbatch asks the client for, from the byte bound, the compression ratio and the partitions owned.", gauge, func(s consumer.Stats) int64 { return s.FetchMaxBytes }),
		},
		flushes: prometheus.NewDesc("kbatch_flushes_total",
			"Batches cut, by reason: records, bytes, wait (MaxWait), buffer (the member's buffer was full), idle (MaxWait off and nothing arrived), revoke, close, ready (ByKey or Resequence: records ready and a goroutine free), caught_up (a partition reached the end of a backlog).",
			[]string{"reason"}, labels),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	for _, d := range []*prometheus.Desc{c.flushes, c.topicRecords, c.lagRecords, c.lagSeconds, c.stalled,
		c.ready, c.live, c.handler, c.batchRecords, c.batchSize, c.recordAge, c.commit} {
		ch <- d
	}
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
	for _, t := range c.c.Topics() {
		for _, v := range []struct {
			outcome string
			n       int64
		}{{"handled", t.Handled}, {"skipped", t.Skipped}, {"dead_lettered", t.DeadLettered}, {"retried", t.Retried}} {
			ch <- prometheus.MustNewConstMetric(c.topicRecords, prometheus.CounterValue, float64(v.n), t.Topic, v.outcome)
		}
	}
	c.collectPartitions(ch)
	h := c.c.Health()
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, b2f(h.Ready))
	ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, b2f(h.Live))
	hs := c.c.Histograms()
	for _, v := range []struct {
		d *prometheus.Desc
		h consumer.Histogram
	}{{c.handler, hs.HandlerSeconds}, {c.batchRecords, hs.BatchRecords}, {c.batchSize, hs.BatchBytes}, {c.recordAge, hs.RecordAgeSeconds}, {c.commit, hs.CommitSeconds}} {
		buckets := make(map[float64]uint64, len(v.h.Bounds))
		for i, b := range v.h.Bounds {
			buckets[b] = v.h.Counts[i]
		}
		ch <- prometheus.MustNewConstHistogram(v.d, v.h.Count, v.h.Sum, buckets)
	}
}

// collectPartitions exports the owned partitions' lag and stall, per
// partition or (ByTopic) per topic.
func (c *Collector) collectPartitions(ch chan<- prometheus.Metric) {
	parts := c.c.Partitions()
	if !c.opts.byTopic {
		for _, p := range parts {
			part := strconv.Itoa(int(p.Partition))
			ch <- prometheus.MustNewConstMetric(c.lagRecords, prometheus.GaugeValue, float64(p.LagRecords), p.Topic, part)
			ch <- prometheus.MustNewConstMetric(c.lagSeconds, prometheus.GaugeValue, p.LagSeconds, p.Topic, part)
			ch <- prometheus.MustNewConstMetric(c.stalled, prometheus.GaugeValue, p.StalledSeconds, p.Topic, part)
		}
		return
	}
	type agg struct{ lag, lagSec, stalled float64 }
	byTopic := map[string]*agg{}
	var order []string
	for _, p := range parts {
		a := byTopic[p.Topic]
		if a == nil {
			a = &agg{}
			byTopic[p.Topic] = a
			order = append(order, p.Topic)
		}
		a.lag += float64(p.LagRecords)
		a.lagSec = max(a.lagSec, p.LagSeconds)
		a.stalled = max(a.stalled, p.StalledSeconds)
	}
	for _, t := range order {
		a := byTopic[t]
		ch <- prometheus.MustNewConstMetric(c.lagRecords, prometheus.GaugeValue, a.lag, t)
		ch <- prometheus.MustNewConstMetric(c.lagSeconds, prometheus.GaugeValue, a.lagSec, t)
		ch <- prometheus.MustNewConstMetric(c.stalled, prometheus.GaugeValue, a.stalled, t)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
