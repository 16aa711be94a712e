package security_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/security"
)

const (
	password = "pw-5f1c9e7a-never-printed"
	token    = "tok-8d2b4a61-never-printed"
)

// TestValidateNamesTheField guards the configuration errors: each bad
// Config is refused with a *ConfigError naming the field, matching
// ErrInvalidConfig, and the error text never holds the password.
func TestValidateNamesTheField(t *testing.T) {
	tok := func(context.Context) (security.Token, error) { return security.Token{Value: token}, nil }
	tlsCfg := &tls.Config{}
	cases := []struct {
		name  string
		cfg   security.Config
		field string // "" means valid
	}{
		{"the zero config is plaintext and valid", security.Config{}, ""},
		{"TLS alone is valid", security.Config{TLS: tlsCfg}, ""},
		{"SCRAM without TLS is allowed", security.Config{SASL: &security.SASL{Mechanism: security.ScramSHA512, User: "u", Password: password}}, ""},
		{"PLAIN over TLS is valid", security.Config{TLS: tlsCfg, SASL: &security.SASL{Mechanism: security.Plain, User: "u", Password: password}}, ""},
		{"OAUTHBEARER over TLS is valid", security.Config{TLS: tlsCfg, SASL: &security.SASL{Mechanism: security.OAuthBearer, Token: tok}}, ""},
		{"an empty mechanism is refused", security.Config{SASL: &security.SASL{User: "u", Password: password}}, "SASL.Mechanism"},
		{"an unknown mechanism is refused", security.Config{SASL: &security.SASL{Mechanism: "GSSAPI", User: "u", Password: password}}, "SASL.Mechanism"},
		{"SCRAM without a user is refused", security.Config{SASL: &security.SASL{Mechanism: security.ScramSHA256, Password: password}}, "SASL.User"},
		{"SCRAM without a password is refused", security.Config{SASL: &security.SASL{Mechanism: security.ScramSHA256, User: "u"}}, "SASL.Password"},
		{"SCRAM with a token callback is refused", security.Config{SASL: &security.SASL{Mechanism: security.ScramSHA512, User: "u", Password: password, Token: tok}}, "SASL.Token"},
		{"PLAIN without TLS is refused", security.Config{SASL: &security.SASL{Mechanism: security.Plain, User: "u", Password: password}}, "SASL.Mechanism"},
		{"OAUTHBEARER without a callback is refused", security.Config{TLS: tlsCfg, SASL: &security.SASL{Mechanism: security.OAuthBearer}}, "SASL.Token"},
		{"OAUTHBEARER with a password is refused", security.Config{TLS: tlsCfg, SASL: &security.SASL{Mechanism: security.OAuthBearer, Token: tok, Password: password}}, "SASL.User"},
		{"OAUTHBEARER without TLS is refused", security.Config{SASL: &security.SASL{Mechanism: security.OAuthBearer, Token: tok}}, "SASL.Mechanism"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.cfg.Options()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Options: %v", err)
				}
				want := 0
				if tc.cfg.TLS != nil {
					want++
				}
				if tc.cfg.SASL != nil {
					want++
				}
				if len(opts) != want {
					t.Fatalf("Options gave %d options, want %d", len(opts), want)
				}
				return
			}
			var ce *security.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, security.ErrInvalidConfig) {
				t.Fatalf("Options error = %v, want a *ConfigError for %s", err, tc.field)
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("the error %q holds the password", err)
			}
		})
	}
}

// TestSecretsNeverPrinted guards against the password or the token reaching
// a log line: every way a Config, its SASL or a Token is commonly printed
// (fmt verbs, slog text and JSON handlers, encoding/json) leaves them out,
// while the summary still says what is configured.
func TestSecretsNeverPrinted(t *testing.T) {
	pool := x509.NewCertPool()
	cfgs := map[string]security.Config{
		"scram": {TLS: &tls.Config{RootCAs: pool}, SASL: &security.SASL{Mechanism: security.ScramSHA512, User: "billing", Password: password}},
		"oauth": {TLS: &tls.Config{}, SASL: &security.SASL{Mechanism: security.OAuthBearer, Token: func(context.Context) (security.Token, error) {
			return security.Token{Value: token}, nil
		}}},
	}
	tk := security.Token{Value: token, AuthzID: "svc", Extensions: map[string]string{"logicalCluster": "lkc-1"}}
	for name, cfg := range cfgs {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
				fmt.Fprintf(&out, verb+"\n", cfg)
				fmt.Fprintf(&out, verb+"\n", cfg.SASL)
				fmt.Fprintf(&out, verb+"\n", *cfg.SASL)
				fmt.Fprintf(&out, verb+"\n", cfg.SASL.Password)
				fmt.Fprintf(&out, verb+"\n", tk)
				fmt.Fprintf(&out, verb+"\n", struct{ Sec security.Config }{cfg})
			}
			for _, h := range []slog.Handler{slog.NewTextHandler(&out, nil), slog.NewJSONHandler(&out, nil)} {
				slog.New(h).Info("connecting", "security", cfg, "sasl", cfg.SASL, "password", cfg.SASL.Password, "token", tk,
					slog.Any("plain_sasl", *cfg.SASL))
			}
			for _, v := range []any{cfg, cfg.SASL, tk, struct{ Sec security.Config }{cfg}} {
				b, err := json.Marshal(v)
				if err == nil {
					out.Write(b)
				}
			}
			for _, secret := range []string{password, token} {
				if strings.Contains(out.String(), secret) {
					t.Fatalf("a secret was printed:\n%s", out.String())
				}
			}
			if !strings.Contains(cfg.String(), string(cfg.SASL.Mechanism)) || !strings.Contains(cfg.String(), "tls(") {
				t.Fatalf("String() = %q: it should still say what is configured", cfg.String())
			}
		})
	}
}

// TestOAuthBearerAsksForATokenPerAuthentication guards the OAUTHBEARER mapping:
// the callback is asked for a token at each authentication (so a refreshed
// token is used by the next connection), its token and extensions go into
// the RFC 7628 initial response, and its error fails the authentication.
func TestOAuthBearerAsksForATokenPerAuthentication(t *testing.T) {
	calls := 0
	fail := errors.New("identity provider down")
	cfg := security.Config{TLS: &tls.Config{}, SASL: &security.SASL{Mechanism: security.OAuthBearer,
		Token: func(context.Context) (security.Token, error) {
			calls++
			if calls == 3 {
				return security.Token{}, fail
			}
			return security.Token{Value: security.Secret(fmt.Sprintf("%s-%d", token, calls)), Extensions: map[string]string{"pool": "p1"}}, nil
		}}}
	mech := security.SASLMechanism(t, cfg)
	if mech.Name() != "OAUTHBEARER" {
		t.Fatalf("mechanism %s", mech.Name())
	}
	for i := 1; i <= 2; i++ {
		_, first, err := mech.Authenticate(context.Background(), "127.0.0.1:9092")
		if err != nil {
			t.Fatalf("Authenticate %d: %v", i, err)
		}
		want := fmt.Sprintf("n,,\x01auth=Bearer %s-%d\x01pool=p1\x01\x01", token, i)
		if string(first) != want {
			t.Fatalf("initial response %q, want %q", first, want)
		}
	}
	if _, _, err := mech.Authenticate(context.Background(), "127.0.0.1:9092"); !errors.Is(err, fail) {
		t.Fatalf("Authenticate with a failing callback: %v, want it to wrap %v", err, fail)
	}
}

// TestClientsConnectThroughTheConfig runs the options against kfake with TLS
// and SASL on: the right credentials get metadata, a wrong password fails,
// and a CA that did not sign the broker's certificate fails verification as
// a *tls.CertificateVerificationError a caller can test for.
func TestClientsConnectThroughTheConfig(t *testing.T) {
	dir := t.TempDir()
	caFile, serverCert := newCA(t, dir, "kbatch test CA")
	otherCA, _ := newCA(t, filepath.Join(dir, "other"), "someone else's CA")
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}}),
		kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "admin", password),
		kfake.Superuser("PLAIN", "plainuser", password),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	trusted, err := security.TLSFiles(caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	untrusted, err := security.TLSFiles(otherCA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		cfg   security.Config
		check func(error) bool // nil: must succeed
	}{
		{"SCRAM-SHA-512 over TLS connects", security.Config{TLS: trusted, SASL: &security.SASL{Mechanism: security.ScramSHA512, User: "admin", Password: password}}, nil},
		{"PLAIN over TLS connects", security.Config{TLS: trusted, SASL: &security.SASL{Mechanism: security.Plain, User: "plainuser", Password: password}}, nil},
		// kfake drops the connection (EOF) where Kafka answers
		// SASL_AUTHENTICATION_FAILED: the securebroker suite checks
		// the error kind on the real broker.
		{"a wrong password fails", security.Config{TLS: trusted, SASL: &security.SASL{Mechanism: security.ScramSHA512, User: "admin", Password: "wrong"}},
			func(err error) bool { return err != nil }},
		{"an unknown CA fails certificate verification", security.Config{TLS: untrusted, SASL: &security.SASL{Mechanism: security.ScramSHA512, User: "admin", Password: password}},
			func(err error) bool {
				var ve *tls.CertificateVerificationError
				return errors.As(err, &ve)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.cfg.Options()
			if err != nil {
				t.Fatal(err)
			}
			cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RequestRetries(0))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
			switch {
			case tc.check == nil && err != nil:
				t.Fatalf("metadata: %v", err)
			case tc.check != nil && !tc.check(err):
				t.Fatalf("metadata error = %v (%T), not the expected kind", err, err)
			case err != nil && strings.Contains(err.Error(), password):
				t.Fatalf("the error %q holds the password", err)
			}
		})
	}
}

// TestTLSFiles guards the PEM helper: a CA file without a certificate and a
// half-given client certificate are refused.
func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := security.TLSFiles(empty, "", ""); err == nil {
		t.Fatal("a CA file without a certificate was accepted")
	}
	if _, err := security.TLSFiles(filepath.Join(dir, "missing.pem"), "", ""); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing CA file: %v", err)
	}
	if _, err := security.TLSFiles("", filepath.Join(dir, "c.pem"), ""); err == nil {
		t.Fatal("a client certificate without its key was accepted")
	}
	cfg, err := security.TLSFiles("", "", "")
	if err != nil || cfg.RootCAs != nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("TLSFiles with no files = %+v, %v: want the system roots and TLS 1.2+", cfg, err)
	}
}

// newCA writes a new CA's certificate to dir/ca.pem and returns its path and
// a server certificate for 127.0.0.1 signed by it.
func newCA(t *testing.T, dir, name string) (string, tls.Certificate) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
