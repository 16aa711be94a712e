// Package kafkatest gives kbatch's own tests a Kafka broker and their own
// topics and groups on it. It is a thin layer over the public test kit,
// github.com/kbatch/kbatch/kbatchtest, that adds what only kbatch's suites
// need: one broker shared by every test of a binary, the broker kinds the
// chaos and interop suites tell apart, and a TestMain with goleak.
//
// Where the broker comes from (Kind reports which):
//   - KAFKA_BROKERS=host:port[,host:port]: an existing cluster (CI starts a
//     real Apache Kafka broker with scripts/kafka/kafka.sh and sets this);
//     Kind is "env";
//   - KAFKA_BROKERS and KBATCH_TESTCONTAINERS=1 together: a Kafka container
//     started by the testcontainers module (`go -C testcontainers run .`),
//     which sets both before it runs the suites; Kind is "testcontainers",
//     so suites that restart the broker with scripts/kafka or call its tools
//     skip themselves. KBATCH_TESTCONTAINERS=1 alone fails the tests that
//     ask for a broker, with a message saying how to start the container;
//   - otherwise: an embedded franz-go kfake cluster, started once per test
//     binary, so plain `go test ./...` needs nothing installed; Kind is
//     "kfake".
//
// IsReal is true for the first two. Each test gets unique topic and group
// names (NewTopic, NewGroup), so many tests share one broker.
package kafkatest
