package securebroker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/security"
)

// misconfigBudget is how long a misconfigured member may run before Run
// must have returned its error.
const misconfigBudget = 20 * time.Second

// TestMisconfiguredMemberGetsAClearError guards what a user sees when the
// member's security or ACLs are wrong: Run returns (within a bound, not
// when the context ends) an error that wraps what the broker said, so that
// errors.Is/As can tell it, and names the resource that is missing; and
// nothing is lost: no commit passes a record that was not handled or
// dead-lettered.
//
// A failing case reports what Run did instead. On Kafka 4.3.1 the
// authentication and group cases pass; with no WRITE on the dead-letter
// topic, Run logs each failed write, keeps the partition waiting (nothing
// is lost) and returns nil when its context ends.
func TestMisconfiguredMemberGetsAClearError(t *testing.T) {
	b := secureBroker(t)
	const poisonAt = 5 // the record that the handler fails permanently
	cases := []struct {
		name     string
		security func(t *testing.T) security.Config
		group    string // a prefix for the group
		dlq      string // a prefix for an existing dead-letter topic; "" for none
		want     string // what the error must wrap, in words
		matches  func(error) bool
		names    string // "group" or "dlq": the name the error must hold
	}{
		{
			name:     "wrong password",
			security: func(t *testing.T) security.Config { return b.security(t, b.user, b.password+"-wrong") },
			group:    b.prefixGroup,
			want:     "kerr.SaslAuthenticationFailed",
			matches:  func(err error) bool { return errors.Is(err, kerr.SaslAuthenticationFailed) },
		},
		{
			name: "unknown CA",
			security: func(t *testing.T) security.Config {
				sec := b.member(t)
				tc, err := security.TLSFiles(otherCA(t), "", "")
				if err != nil {
					t.Fatal(err)
				}
				sec.TLS = tc
				return sec
			},
			group: b.prefixGroup,
			want:  "a *tls.CertificateVerificationError (x509: unknown authority)",
			matches: func(err error) bool {
				var ve *tls.CertificateVerificationError
				var ua x509.UnknownAuthorityError
				return errors.As(err, &ve) || errors.As(err, &ua)
			},
		},
		{
			name:     "no READ on the group",
			security: b.member,
			group:    "kbsec.nogroup.",
			want:     "kerr.GroupAuthorizationFailed",
			matches:  func(err error) bool { return errors.Is(err, kerr.GroupAuthorizationFailed) },
			names:    "group",
		},
		{
			name:     "no WRITE on the dead-letter topic",
			security: b.member,
			group:    b.prefixGroup,
			dlq:      "kbsec.nodlq.",
			want:     "kerr.TopicAuthorizationFailed",
			matches:  func(err error) bool { return errors.Is(err, kerr.TopicAuthorizationFailed) },
			names:    "dlq",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			input := name(t, b.prefixInput)
			group := name(t, tc.group)
			b.createTopic(t, input, 1, nil)
			b.produce(t, input, 1, 20, func(i int) string {
				if i == poisonAt {
					return "poison"
				}
				return fmt.Sprintf("v-%d", i)
			})
			var dlq string
			var dl *consumer.DeadLetter
			if tc.dlq != "" {
				dlq = name(t, tc.dlq)
				b.createTopic(t, dlq, 1, nil)
				dl = &consumer.DeadLetter{Topic: func(string) string { return dlq }}
			}

			var (
				mu      sync.Mutex
				handled []int64
				logs    logBuffer
			)
			c, err := consumer.New(consumer.Config{
				Brokers: b.brokers, Group: group, Topics: []string{input},
				Batch:        batcher.Policy{MaxRecords: 100, MaxWait: 20 * time.Millisecond},
				Commit:       offsetsPolicy(),
				DrainTimeout: 2 * time.Second,
				Retry:        consumer.Retry{Initial: 50 * time.Millisecond, Max: time.Second},
				DeadLetter:   dl,
				Logger:       logs.logger(),
				Security:     tc.security(t),
			}, func(ctx context.Context, batch *consumer.Batch) error {
				mu.Lock()
				defer mu.Unlock()
				for i, r := range batch.Records {
					if string(r.Value) == "poison" {
						return consumer.FailedAt(i, consumer.Permanent(errors.New("poison record")))
					}
					handled = append(handled, r.Offset)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), misconfigBudget)
			defer cancel()
			start := time.Now()
			err = c.Run(ctx)
			took := time.Since(start).Round(100 * time.Millisecond)
			atDeadline := ctx.Err() != nil

			switch {
			case err == nil:
				t.Errorf("Run returned nil after %s (%s); want an error wrapping %s.\nStats: %+v\nThe member logged instead:\n%s",
					took, deadlineWord(atDeadline), tc.want, c.Stats(), logs.lines(3, "level=WARN", "level=ERROR"))
			case !tc.matches(err):
				t.Errorf("Run returned %q (%T) after %s; want it to wrap %s", err, err, took, tc.want)
			case atDeadline:
				t.Errorf("Run returned the error only when its context ended (%s): %v", took, err)
			}
			if err != nil {
				switch tc.names {
				case "group":
					if !strings.Contains(err.Error(), group) {
						t.Errorf("the error %q does not name the group %s", err, group)
					}
				case "dlq":
					if !strings.Contains(err.Error(), dlq) {
						t.Errorf("the error %q does not name the dead-letter topic %s", err, dlq)
					}
				}
				checkNoSecret(t, b, "error", err.Error())
			}
			checkNoSecret(t, b, "logs", logs.String())

			// Nothing lost: no commit past the poison record, which was
			// neither handled nor dead-lettered; nothing past it handled.
			committed := b.committed(t, group, input)
			if at, ok := committed[0]; ok && at > poisonAt {
				t.Errorf("the group committed offset %d, past the record at %d that was not dead-lettered", at, poisonAt)
			}
			mu.Lock()
			for _, o := range handled {
				if o >= poisonAt {
					t.Errorf("the handler was given offset %d, past the stalled record at %d", o, poisonAt)
				}
			}
			mu.Unlock()
			if dlq != "" {
				if n := len(b.readAll(t, dlq)); n != 0 {
					t.Errorf("the dead-letter topic the member may not write holds %d records", n)
				}
			}
		})
	}
}

func deadlineWord(atDeadline bool) string {
	if atDeadline {
		return "when its context ended"
	}
	return "before its context ended"
}

// otherCA writes the certificate of a new CA, which signed nothing the
// broker holds, and returns its path.
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the broker's CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
