// Command probe waits until a Kafka cluster answers, for scripts/kafka/kafka.sh.
//
// It connects to the brokers given by -brokers, asks for ApiVersions and
// metadata and, with -create-topic, creates and deletes a throwaway topic to
// prove that the KRaft controller accepts writes. With -require-kip848 it also
// checks that the broker supports the KIP-848 consumer group protocol
// (ConsumerGroupHeartbeat API advertised and finalized group.version >= 1).
//
// Against a secured broker, -tls-ca names the CA file (PEM) to trust and
// -sasl-mechanism and -sasl-user the SASL login, whose password comes from
// the environment variable KBATCH_PROBE_SASL_PASSWORD (not a flag, so that
// it does not show in the process list).
//
// It retries until -timeout passes: exit 0 once ready, exit 1 with a message
// on stderr when the deadline passes, exit 2 on bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/security"
)

// passwordEnv holds the SASL password.
const passwordEnv = "KBATCH_PROBE_SASL_PASSWORD"

func main() {
	var (
		brokers      = flag.String("brokers", "127.0.0.1:9092", "comma-separated seed brokers")
		timeout      = flag.Duration("timeout", 90*time.Second, "give up after this long")
		interval     = flag.Duration("interval", 500*time.Millisecond, "wait between attempts")
		createTopic  = flag.Bool("create-topic", false, "also create and delete a throwaway topic (proves the controller works)")
		requireK848  = flag.Bool("require-kip848", false, "also require the KIP-848 consumer group protocol (ConsumerGroupHeartbeat, group.version>=1)")
		quiet        = flag.Bool("q", false, "print nothing on success")
		verbose      = flag.Bool("v", false, "print every failed attempt")
		attemptLimit = flag.Duration("attempt-timeout", 5*time.Second, "timeout of one attempt")
		tlsCA        = flag.String("tls-ca", "", "dial with TLS, trusting the CA certificates of this PEM file")
		mechanism    = flag.String("sasl-mechanism", "", "authenticate with this SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); password from $"+passwordEnv)
		user         = flag.String("sasl-user", "", "the SASL user")
	)
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "probe: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	var sec security.Config
	if *tlsCA != "" {
		tc, err := security.TLSFiles(*tlsCA, "", "")
		if err != nil {
			fmt.Fprintf(os.Stderr, "probe: %v\n", err)
			os.Exit(2)
		}
		sec.TLS = tc
	}
	if *mechanism != "" {
		sec.SASL = &security.SASL{Mechanism: security.Mechanism(*mechanism), User: *user, Password: security.Secret(os.Getenv(passwordEnv))}
	}
	secOpts, err := sec.Options()
	if err != nil {
		fmt.Fprintf(os.Stderr, "probe: %v\n", err)
		os.Exit(2)
	}
	seeds := splitBrokers(*brokers)
	if len(seeds) == 0 {
		fmt.Fprintln(os.Stderr, "probe: -brokers is empty")
		os.Exit(2)
	}

	start := time.Now()
	deadline := start.Add(*timeout)
	var lastErr error
	attempts := 0
	for {
		attempts++
		remaining := time.Until(deadline)
		if remaining <= 0 {
			break
		}
		per := *attemptLimit
		if per > remaining {
			per = remaining
		}
		// A topic create+delete can take longer than a metadata round trip; give it room.
		if *createTopic && per < 15*time.Second && remaining > per {
			per = min(15*time.Second, remaining)
		}
		summary, err := attempt(seeds, per, *createTopic, *requireK848, secOpts)
		if err == nil {
			if !*quiet {
				fmt.Printf("probe: %s ready after %s (%d attempt(s)): %s\n",
					strings.Join(seeds, ","), time.Since(start).Round(time.Millisecond), attempts, summary)
			}
			return
		}
		lastErr = err
		if *verbose {
			fmt.Fprintf(os.Stderr, "probe: attempt %d: %v\n", attempts, err)
		}
		sleep := *interval
		if r := time.Until(deadline); r < sleep {
			sleep = r
		}
		if sleep > 0 {
			time.Sleep(sleep)
		}
	}
	fmt.Fprintf(os.Stderr, "probe: %s not ready after %s (%d attempt(s)); last error: %v\n",
		strings.Join(seeds, ","), timeout.String(), attempts, lastErr)
	os.Exit(1)
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// attempt does one full readiness check with a fresh client.
func attempt(seeds []string, timeout time.Duration, createTopic, requireK848 bool, secOpts []kgo.Opt) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	cl, err := kgo.NewClient(append(secOpts,
		kgo.SeedBrokers(seeds...),
		kgo.DialTimeout(2*time.Second),
		kgo.RequestRetries(0),
		kgo.RetryTimeout(timeout),
		kgo.MetadataMinAge(100*time.Millisecond),
	)...)
	if err != nil {
		return "", fmt.Errorf("new client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	// ApiVersions straight to a seed broker: also carries the finalized features.
	req := kmsg.NewPtrApiVersionsRequest()
	req.ClientSoftwareName = "kbatch-kafka-probe"
	req.ClientSoftwareVersion = "1"
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return "", fmt.Errorf("ApiVersions: %w", err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return "", fmt.Errorf("ApiVersions: %w", err)
	}
	var cgHeartbeat = -1
	for _, k := range resp.ApiKeys {
		if k.ApiKey == int16(kmsg.ConsumerGroupHeartbeat) {
			cgHeartbeat = int(k.MaxVersion)
		}
	}
	groupVersion := int16(-1)
	for _, f := range resp.FinalizedFeatures {
		if f.Name == "group.version" {
			groupVersion = f.MaxVersionLevel
		}
	}
	if requireK848 {
		if cgHeartbeat < 0 {
			return "", errors.New("broker does not advertise ConsumerGroupHeartbeat (KIP-848)")
		}
		if groupVersion < 1 {
			return "", fmt.Errorf("finalized group.version is %d, KIP-848 needs >= 1", groupVersion)
		}
	}

	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return "", fmt.Errorf("metadata: %w", err)
	}
	if len(meta.Brokers) == 0 {
		return "", errors.New("metadata: no brokers registered yet")
	}
	if meta.Controller < 0 {
		return "", errors.New("metadata: no active controller yet")
	}

	summary := fmt.Sprintf("cluster=%s controller=%d brokers=%d apis=%d consumerGroupHeartbeat.max=%d group.version=%d",
		meta.Cluster, meta.Controller, len(meta.Brokers), len(resp.ApiKeys), cgHeartbeat, groupVersion)

	if createTopic {
		topic := fmt.Sprintf("kbatch-probe-%d-%d", os.Getpid(), time.Now().UnixNano())
		cr, err := adm.CreateTopic(ctx, 1, 1, nil, topic)
		if err != nil {
			return "", fmt.Errorf("create topic %s: %w", topic, err)
		}
		if cr.Err != nil {
			return "", fmt.Errorf("create topic %s: %w", topic, cr.Err)
		}
		dr, err := adm.DeleteTopic(ctx, topic)
		if err != nil {
			return "", fmt.Errorf("delete topic %s: %w", topic, err)
		}
		if dr.Err != nil {
			return "", fmt.Errorf("delete topic %s: %w", topic, dr.Err)
		}
		summary += " create+delete-topic=ok"
	}
	return summary, nil
}
