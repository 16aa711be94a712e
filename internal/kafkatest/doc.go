// Package kafkatest gives tests a Kafka broker and their own topics and
// groups on it.
//
// Where the broker comes from (Kind reports which):
//   - KBATCH_TESTCONTAINERS=1: an Apache Kafka container (image
//     apache/kafka:4.3.1, or KBATCH_TESTCONTAINERS_IMAGE) started with
//     testcontainers-go and its Kafka module, once per test binary, and
//     removed by Shutdown. It needs a Docker engine; without one, tests that
//     ask for a broker are skipped with a message saying so. It wins over
//     KAFKA_BROKERS;
//   - KAFKA_BROKERS=host:port[,host:port]: an existing cluster (CI starts a
//     real Apache Kafka broker with scripts/kafka/kafka.sh and sets this);
//   - otherwise: an embedded franz-go kfake cluster, started once per test
//     binary, so plain `go test ./...` needs nothing installed.
//
// IsReal is true for the first two. Each test gets unique topic and group
// names (NewTopic, NewGroup), so many tests share one broker.
package kafkatest
