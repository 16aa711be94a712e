// Package security holds a Kafka connection's security settings, TLS and
// SASL, given once and used by every client kbatch makes: the consumer
// group member (and so its dead-letter producer and admin calls, which
// share its client) and the Kafka dedupe store's clients.
//
//	tlsCfg, err := security.TLSFiles("/etc/kafka/ca.pem", "", "")
//	if err != nil { ... }
//	sec := security.Config{
//		TLS:  tlsCfg,
//		SASL: &security.SASL{Mechanism: security.ScramSHA512, User: "billing", Password: security.Secret(pw)},
//	}
//	c, err := consumer.New(consumer.Config{Brokers: brokers, Group: "billing", Topics: topics, Security: sec}, handle)
//	store, err := kafkastore.New(kafkastore.Options{Brokers: brokers, Group: "billing", Security: sec})
//
// The zero Config is a plaintext connection without authentication (Java:
// security.protocol=PLAINTEXT). TLS alone is SSL, SASL alone SASL_PLAINTEXT,
// both SASL_SSL. The mechanisms are PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and
// OAUTHBEARER (a token callback, called for every new connection so it can
// hand out a fresh token). Options maps a Config to franz-go client options
// (kgo.DialTLSConfig, kgo.SASL with franz-go's sasl/plain, sasl/scram and
// sasl/oauth).
//
// Secrets stay out of logs: passwords and tokens are of type Secret, which
// prints as "[redacted]" through fmt, log/slog and encoding/json, and
// Config, SASL and Token print a summary without them. A validation error
// names the field, never its value.
//
// PLAIN and OAUTHBEARER send the password or token as they are, so they are
// refused without TLS. SCRAM never sends the password and may run without
// TLS, though records and metadata then travel in the clear.
package security
