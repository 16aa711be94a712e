package consumer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
)

// ErrInvalidConfig is matched by every error New returns for a bad Config
// (see ConfigError for the field).
var ErrInvalidConfig = errors.New("kbatch: invalid config")

// ErrClosed is returned by Run when the consumer was already closed.
var ErrClosed = errors.New("kbatch: consumer closed")

// PanicError is the error a handler panic becomes: the batch is retried like
// any failed batch and the process does not crash.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("kbatch: handler panic: %v", e.Value) }

// Permanent wraps err to say that retrying cannot help: the records it names
// go to the dead-letter topic at once (the whole batch, or the record at the
// index of a FailedAt). Without a dead-letter topic it is retried like any
// error, since nothing may be skipped unrecorded.
func Permanent(err error) error { return &permanentError{err} }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether err was made by Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// FailedAt reports a partial batch failure: the records before index i (of
// Batch.Records) were handled and complete; the record at i failed with err,
// and the retry resumes at it. Wrap err with Permanent to send record i to
// the dead-letter topic and go on with i+1.
func FailedAt(i int, err error) error { return &PartialError{Index: i, Err: err} }

// PartialError is the error FailedAt returns.
type PartialError struct {
	Index int
	Err   error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("kbatch: batch failed at record %d: %v", e.Index, e.Err)
}
func (e *PartialError) Unwrap() error { return e.Err }

// isFatal reports whether an error the client reported while polling means
// nothing can be consumed until someone changes the cluster or the
// configuration, so that Run stops with it (as the Java consumer's poll
// throws): authentication failed (SASL or TLS), or the group, the cluster or
// a topic is not authorized. An unknown topic is not fatal: it may be
// created later (it is counted in Stats.FetchErrors and logged).
func isFatal(err error) bool {
	for _, fatal := range []error{
		kerr.SaslAuthenticationFailed, kerr.UnsupportedSaslMechanism, kerr.IllegalSaslState,
		kerr.GroupAuthorizationFailed, kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed,
		kerr.InvalidTopicException,
	} {
		if errors.Is(err, fatal) {
			return true
		}
	}
	var (
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}
