// Package kafkatest gives tests a Kafka broker and their own topics and
// groups on it.
//
// Where the broker comes from:
//   - KAFKA_BROKERS=host:port[,host:port]: an existing cluster (CI starts a
//     real Apache Kafka broker and sets this);
//   - otherwise: an embedded franz-go kfake cluster, started once per test
//     binary, so plain `go test ./...` needs nothing installed.
//
// Each test gets unique topic and group names (NewTopic, NewGroup), so many
// tests share one broker.
package kafkatest
