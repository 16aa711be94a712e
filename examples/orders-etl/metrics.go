package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/metrics"
)

func newCollector(c *consumer.Consumer) prometheus.Collector {
	return metrics.NewCollector(c, prometheus.Labels{"service": "orders-etl"})
}
