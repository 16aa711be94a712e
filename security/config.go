package security

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Config is the security of every connection to the brokers. The zero value
// is plaintext without authentication.
type Config struct {
	// TLS, when set, dials every broker with TLS using a copy of this
	// config (Java: security.protocol=SSL, or SASL_SSL with SASL). An empty
	// ServerName is set per connection from the broker's host, so one
	// config serves every broker. Default nil: plaintext. TLSFiles makes
	// one from PEM files.
	TLS *tls.Config
	// SASL, when set, authenticates every connection (Java: sasl.mechanism
	// and sasl.jaas.config). Default nil: no authentication.
	SASL *SASL
}

// Mechanism is a SASL mechanism, named as Kafka names it.
type Mechanism string

// The SASL mechanisms.
const (
	// Plain is PLAIN: the user and password are sent as they are, so it
	// needs TLS.
	Plain Mechanism = "PLAIN"
	// ScramSHA256 is SCRAM-SHA-256: a challenge-response that never sends
	// the password.
	ScramSHA256 Mechanism = "SCRAM-SHA-256"
	// ScramSHA512 is SCRAM-SHA-512.
	ScramSHA512 Mechanism = "SCRAM-SHA-512"
	// OAuthBearer is OAUTHBEARER: a bearer token from SASL.Token, sent as
	// it is, so it needs TLS.
	OAuthBearer Mechanism = "OAUTHBEARER"
)

// SASL is a SASL mechanism and its credentials.
type SASL struct {
	// Mechanism is required.
	Mechanism Mechanism
	// User and Password are the credentials of PLAIN and SCRAM; both are
	// required there and must be empty for OAUTHBEARER.
	User     string
	Password Secret
	// Token returns the token of OAUTHBEARER; required there, nil
	// otherwise. It is called for every new connection (a client opens one
	// or more per broker, and again after a broker drops one), with the
	// dial's context, so it can refresh an expiring token; an error fails
	// that connection's authentication.
	Token func(ctx context.Context) (Token, error)
}

// Token is an OAUTHBEARER token.
type Token struct {
	// Value is the token itself, e.g. a JWT. Required.
	Value Secret
	// AuthzID is the optional authorization identity (RFC 7628's "a=").
	AuthzID string
	// Extensions are the optional SASL extensions (KIP-342), e.g. the
	// logical cluster and identity pool of a managed Kafka service.
	Extensions map[string]string
}

// Secret is a password or token. It prints as "[redacted]" through fmt
// (every verb, %#v included), log/slog and encoding/json; string(s) is the
// secret itself.
type Secret string

const redacted = "[redacted]"

func (Secret) String() string   { return redacted }
func (Secret) GoString() string { return redacted }

// Format prints "[redacted]" for every verb: without it, a verb that is not
// a string verb (%d) would print the bytes in its error text.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue keeps the secret out of slog records.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText keeps the secret out of encoding/json and other text encoders.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Validate reports the first invalid field as a *ConfigError naming it.
func (c Config) Validate() error {
	if c.SASL == nil {
		return nil
	}
	s := c.SASL
	bad := func(field, reason string) error { return &ConfigError{Field: "SASL." + field, Reason: reason} }
	switch s.Mechanism {
	case Plain, ScramSHA256, ScramSHA512:
		switch {
		case s.User == "":
			return bad("User", "is empty: "+string(s.Mechanism)+" needs a user")
		case s.Password == "":
			return bad("Password", "is empty: "+string(s.Mechanism)+" needs a password")
		case s.Token != nil:
			return bad("Token", "is set: only OAUTHBEARER uses a token")
		case s.Mechanism == Plain && c.TLS == nil:
			return bad("Mechanism", "PLAIN sends the password as it is: set TLS (or use SCRAM)")
		}
	case OAuthBearer:
		switch {
		case s.Token == nil:
			return bad("Token", "is nil: OAUTHBEARER needs a token callback")
		case s.User != "" || s.Password != "":
			return bad("User", "is set: OAUTHBEARER takes its identity from the token")
		case c.TLS == nil:
			return bad("Mechanism", "OAUTHBEARER sends the token as it is: set TLS")
		}
	case "":
		return bad("Mechanism", "is empty")
	default:
		// The name is not a secret, but it may be a mistyped one: quote it
		// so that the reader sees exactly what was given.
		return bad("Mechanism", fmt.Sprintf("%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER", string(s.Mechanism)))
	}
	return nil
}

// Options validates c and returns the franz-go client options that apply it:
// kgo.DialTLSConfig with a copy of TLS, and kgo.SASL with the mechanism.
// A zero Config gives none.
func (c Config) Options() ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []kgo.Opt
	if c.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(c.TLS.Clone()))
	}
	if c.SASL != nil {
		opts = append(opts, kgo.SASL(c.SASL.mechanism()))
	}
	return opts, nil
}

// mechanism maps a validated SASL to franz-go's mechanism.
func (s *SASL) mechanism() sasl.Mechanism {
	user, pass := s.User, string(s.Password)
	switch s.Mechanism {
	case Plain:
		return plain.Auth{User: user, Pass: pass}.AsMechanism()
	case ScramSHA256:
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case ScramSHA512:
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	}
	token := s.Token
	return oauth.Oauth(func(ctx context.Context) (oauth.Auth, error) {
		t, err := token(ctx)
		if err != nil {
			return oauth.Auth{}, fmt.Errorf("security: OAUTHBEARER token callback: %w", err)
		}
		if t.Value == "" {
			return oauth.Auth{}, &ConfigError{Field: "SASL.Token", Reason: "returned an empty token"}
		}
		return oauth.Auth{Zid: t.AuthzID, Token: string(t.Value), Extensions: t.Extensions}, nil
	})
}

// String summarises c without its secrets, e.g.
// "tls(ca=custom) sasl(SCRAM-SHA-512 user=billing password=[redacted])".
func (c Config) String() string {
	var parts []string
	if c.TLS != nil {
		parts = append(parts, "tls("+tlsSummary(c.TLS)+")")
	}
	if c.SASL != nil {
		parts = append(parts, "sasl("+c.SASL.String()+")")
	}
	if len(parts) == 0 {
		return "plaintext"
	}
	return strings.Join(parts, " ")
}

// GoString is String, so that %#v does not print the fields.
func (c Config) GoString() string { return "security.Config(" + c.String() + ")" }

// LogValue is a group of the same summary, for log/slog.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Bool("tls", c.TLS != nil)}
	if c.TLS != nil {
		attrs = append(attrs, slog.String("tls_settings", tlsSummary(c.TLS)))
	}
	if c.SASL != nil {
		attrs = append(attrs, slog.String("sasl_mechanism", string(c.SASL.Mechanism)))
		if c.SASL.User != "" {
			attrs = append(attrs, slog.String("sasl_user", c.SASL.User))
		}
	}
	return slog.GroupValue(attrs...)
}

// String summarises s without its secret, e.g.
// "SCRAM-SHA-512 user=billing password=[redacted]".
func (s *SASL) String() string {
	if s == nil {
		return "none"
	}
	var b strings.Builder
	b.WriteString(string(s.Mechanism))
	if s.User != "" {
		fmt.Fprintf(&b, " user=%s", s.User)
	}
	if s.Password != "" {
		b.WriteString(" password=" + redacted)
	}
	if s.Token != nil {
		b.WriteString(" token=from-callback")
	}
	return b.String()
}

// GoString is String, so that %#v does not print the fields.
func (s *SASL) GoString() string { return "&security.SASL(" + s.String() + ")" }

// LogValue is the same summary, for log/slog.
func (s *SASL) LogValue() slog.Value { return slog.StringValue(s.String()) }

// String summarises t without its value.
func (t Token) String() string {
	return fmt.Sprintf("token(value=%s authzid=%q extensions=%d)", redacted, t.AuthzID, len(t.Extensions))
}

// GoString is String, so that %#v does not print the fields.
func (t Token) GoString() string { return t.String() }

// LogValue is the same summary, for log/slog.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// tlsSummary names what a TLS config trusts and presents, never key material.
func tlsSummary(t *tls.Config) string {
	var parts []string
	if t.RootCAs != nil {
		parts = append(parts, "ca=custom")
	} else {
		parts = append(parts, "ca=system")
	}
	if len(t.Certificates) > 0 || t.GetClientCertificate != nil {
		parts = append(parts, "client-cert=yes")
	}
	if t.ServerName != "" {
		parts = append(parts, "server-name="+t.ServerName)
	}
	if t.InsecureSkipVerify {
		parts = append(parts, "verify=OFF")
	}
	return strings.Join(parts, " ")
}
