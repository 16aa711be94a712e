package security

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles returns a TLS config (TLS 1.2 or later) that trusts the CA
// certificates of caFile, PEM (Java: ssl.truststore.location with
// ssl.truststore.type=PEM), or the system's roots when caFile is empty; and
// that presents the client certificate of certFile and keyFile, PEM, when
// both are set (mutual TLS; Java: ssl.keystore.*). The files are read once,
// now.
func TLSFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("security: reading the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("security: the CA file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			// LoadX509KeyPair's errors name the files and the PEM block
			// types, never key bytes.
			return nil, fmt.Errorf("security: loading the client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case certFile != "" || keyFile != "":
		return nil, errors.New("security: a client certificate needs both certFile and keyFile")
	}
	return cfg, nil
}
