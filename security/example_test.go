package security_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/kbatch/kbatch/security"
)

// A Config is given once (here TLS with a private CA and SCRAM-SHA-512, the
// Java client's security.protocol=SASL_SSL) and passed as the Security of
// consumer.Config and kafkastore.Options. Printing it never shows the
// password.
func ExampleConfig() {
	// In a service: tlsCfg, err := security.TLSFiles("/etc/kafka/ca.pem", "", "")
	tlsCfg := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	sec := security.Config{
		TLS: tlsCfg,
		SASL: &security.SASL{
			Mechanism: security.ScramSHA512,
			User:      "billing",
			Password:  security.Secret("s3cret-from-the-vault"),
		},
	}
	opts, err := sec.Options() // the franz-go options, for a client of your own
	if err != nil {
		panic(err)
	}
	fmt.Println(sec)
	fmt.Printf("%+v\n", sec.SASL)
	fmt.Println(len(opts), "client options")
	// Output:
	// tls(ca=custom) sasl(SCRAM-SHA-512 user=billing password=[redacted])
	// SCRAM-SHA-512 user=billing password=[redacted]
	// 2 client options
}
