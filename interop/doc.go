// Package interop checks kbatch against Kafka's own tools on a real broker:
// records produced by kcat (librdkafka) are consumed by a kbatch group, and
// after the group closes, Kafka's ConsumerGroupCommand
// (org.apache.kafka.tools.consumer.group.ConsumerGroupCommand, through
// scripts/kafka/kafka.sh run-class) must report a lag of 0 on every
// partition: kbatch's commits are ordinary group offsets that the Java tools
// read like any other, under both group protocols.
//
// The test is skipped unless KBATCH_INTEROP=1 and KAFKA_BROKERS are set, and
// when kcat, java or scripts/kafka/kafka.sh are missing:
//
//	scripts/kafka/kafka.sh up && scripts/kafka/kafka.sh ensure-kcat
//	KBATCH_INTEROP=1 KAFKA_BROKERS=127.0.0.1:9092 go test -v -count=1 ./interop/
package interop
