//go:build !memchild

package main

// scenarios is the table of scenarios, in their base order (each run
// rotates it). The Java reference is added by main when it can run.
func scenarios() []Scenario {
	return append([]Scenario{
		{Key: "franz-raw", Name: "franz-go poll loop, auto-commit (ceiling)", Run: runFranzRaw},
		{Key: "franz-sync", Name: "franz-go, sync commit per record", Subset: true, Run: runFranzSync},
		{Key: "kbatch", Name: "kbatch, defaults", Run: runKbatch},
		{Key: "kbatch-dedupe-mem", Name: "kbatch, memory dedupe store", Run: runKbatchDedupeMemory},
		{Key: "kbatch-dedupe-kafka", Name: "kbatch, Kafka dedupe store", Run: runKbatchDedupeKafka},
		{Key: "kbatch-dedupe-mix-mem", Name: "kbatch, memory store, 10% repeated keys", Run: runKbatchDedupeMixMemory},
		{Key: "kbatch-dedupe-mix-kafka", Name: "kbatch, Kafka store, 10% repeated keys", Run: runKbatchDedupeMixKafka},
		{Key: "kbatch-work", Name: "kbatch, simulated work", Run: runKbatchWork},
		{Key: "kafka-go", Name: "segmentio/kafka-go Reader, CommitInterval", Run: runKafkaGo},
		{Key: "sarama", Name: "IBM/sarama group, auto-commit", Run: runSarama},
	}, pgScenarios()...)
}
