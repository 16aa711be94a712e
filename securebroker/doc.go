// Package securebroker checks kbatch against a broker that enforces TLS,
// SASL and ACLs: a consumer with a dead-letter topic and the Kafka dedupe
// store must work end to end as a least-privilege user (READ on its topics
// and group, WRITE on an existing dead-letter topic, READ/WRITE on an
// existing changelog, never CREATE); a misconfigured member (wrong
// password, unknown CA, no READ on its group, no WRITE on its dead-letter
// topic) must get an error from Run that names what is missing, and lose
// nothing; and no password reaches a log line, an error or a metric.
//
// The package holds only tests. They are skipped unless KBATCH_SECURE_BROKERS
// and the other settings that scripts/kafka/kafka.sh prints are in the
// environment:
//
//	scripts/kafka/kafka.sh up --secure
//	eval "$(scripts/kafka/kafka.sh --secure env)"
//	go test -count=1 -v ./securebroker/
//
// or scripts/ci-secure.sh, which also brings the broker down. The broker's
// ACLs are prefixed (see kafka.sh): the tests name their topics and groups
// under KBATCH_SECURE_PREFIX_INPUT, _GROUP, _DLQ and _CHANGELOG to get the
// member's rights, and outside them to take a right away.
package securebroker
