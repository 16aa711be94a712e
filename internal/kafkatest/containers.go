package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
	"github.com/testcontainers/testcontainers-go/wait"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The third source of a broker: an Apache Kafka container started with
// testcontainers-go, for users who have Docker but no Kafka.
//
//	KBATCH_TESTCONTAINERS=1 go test ./...
//
// The container is started once per test binary, on the first Brokers call,
// and removed by Shutdown (and by testcontainers' reaper if the binary dies).
// When no Docker engine answers, every test that asks for a broker is
// skipped with a message saying so.

const (
	// EnvTestcontainers selects the container broker when set to 1 (or
	// true). It wins over KAFKA_BROKERS.
	EnvTestcontainers = "KBATCH_TESTCONTAINERS"
	// EnvTestcontainersImage overrides ContainerImage.
	EnvTestcontainersImage = "KBATCH_TESTCONTAINERS_IMAGE"
	// ContainerImage is the default image: the same Kafka release as
	// scripts/kafka (the CI broker).
	ContainerImage = "apache/kafka:4.3.1"
)

// The Kafka module lays the broker out as: PLAINTEXT on 9093 (mapped to a
// random host port; the one clients use), BROKER on 9092 (inter-broker),
// CONTROLLER on 9094. Its start-up script is written for Confluent's
// images; for apache/kafka this package replaces the command and the
// post-start hook and keeps the module's listener layout and settings.
const (
	containerClientPort = "9093/tcp"
	containerStartFile  = "/tmp/kbatch-testcontainers-start.sh"
	containerStartWait  = 3 * time.Minute // includes pulling the image
)

var (
	containerOnce    sync.Once
	containerKafka   *tckafka.KafkaContainer
	containerBrokers []string
	containerErr     error
)

// errNoDocker marks a container start that failed because no Docker engine
// answered: tests skip instead of failing.
var errNoDocker = errors.New("no Docker engine answers")

// useTestcontainers reports whether KBATCH_TESTCONTAINERS asks for the
// container broker.
func useTestcontainers() bool {
	on, err := strconv.ParseBool(os.Getenv(EnvTestcontainers))
	return err == nil && on
}

// containerImage is the image to run.
func containerImage() string {
	if img := os.Getenv(EnvTestcontainersImage); img != "" {
		return img
	}
	return ContainerImage
}

// brokersFromContainer starts the container on first use and returns its
// bootstrap address. It skips the test when Docker is not there.
func brokersFromContainer(t testing.TB) []string {
	t.Helper()
	containerOnce.Do(func() {
		containerBrokers, containerErr = startContainer()
	})
	if errors.Is(containerErr, errNoDocker) {
		t.Skipf("kafkatest: %s=1 asks for a Kafka container, but %v; start Docker, or unset %s to test against the embedded kfake broker (or KAFKA_BROKERS)",
			EnvTestcontainers, containerErr, EnvTestcontainers)
	}
	if containerErr != nil {
		t.Fatalf("kafkatest: %v", containerErr)
	}
	return containerBrokers
}

// dockerAnswers pings the Docker engine testcontainers would use
// (DOCKER_HOST, ~/.testcontainers.properties, the usual sockets).
func dockerAnswers(ctx context.Context) (err error) {
	defer func() {
		// Older testcontainers releases panicked when no Docker host was
		// found; keep the skip path working if that comes back.
		if r := recover(); r != nil {
			err = fmt.Errorf("finding the Docker host: %v", r)
		}
	}()
	p, err := testcontainers.ProviderDocker.GetProvider()
	if err != nil {
		return err
	}
	defer p.Close()
	return p.Health(ctx)
}

// startContainer runs the Kafka container and waits until it answers.
func startContainer() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), containerStartWait)
	defer cancel()

	hctx, hcancel := context.WithTimeout(ctx, 15*time.Second)
	err := dockerAnswers(hctx)
	hcancel()
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", errNoDocker, err)
	}

	img := containerImage()
	clusterID, err := newClusterID()
	if err != nil {
		return nil, err
	}
	c, err := tckafka.Run(ctx, img,
		tckafka.WithClusterID(clusterID),
		testcontainers.WithEnv(containerBrokerSettings),
		dropEnv("KAFKA_REST_BOOTSTRAP_SERVERS"), // Confluent's REST proxy; not a broker setting
		testcontainers.WithCmd("-c", "while [ ! -f "+containerStartFile+" ]; do sleep 0.1; done; exec bash "+containerStartFile),
		testcontainers.WithLifecycleHooks(testcontainers.ContainerLifecycleHooks{
			PostStarts: []testcontainers.ContainerHook{startApacheKafka},
		}),
	)
	if err != nil {
		if c != nil {
			_ = testcontainers.TerminateContainer(c)
		}
		return nil, fmt.Errorf("starting %s with testcontainers: %w", img, err)
	}
	containerKafka = c
	brokers, err := c.Brokers(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the bootstrap address of %s: %w", img, err)
	}
	if err := waitAnswers(ctx, brokers); err != nil {
		return nil, fmt.Errorf("%s on %v: %w", img, brokers, err)
	}
	return brokers, nil
}

// containerBrokerSettings are the same test-friendly group settings as
// scripts/kafka's server.properties, so a suite behaves alike on both: KIP-848
// sessions down to 6 s, classic sessions down to 1 s, and every internal
// topic at replication factor 1.
var containerBrokerSettings = map[string]string{
	"KAFKA_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS":             "1000",
	"KAFKA_GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS":         "500",
	"KAFKA_GROUP_CONSUMER_SESSION_TIMEOUT_MS":                "10000",
	"KAFKA_GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS":            "6000",
	"KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS":                     "1000",
	"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
	"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            "1",
	"KAFKA_NUM_PARTITIONS":                                   "1",
	"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                        "true",
}

func dropEnv(key string) testcontainers.CustomizeRequestOption {
	return func(req *testcontainers.GenericContainerRequest) error {
		delete(req.Env, key)
		return nil
	}
}

// startApacheKafka is the post-start hook: now that the client port is
// mapped, it writes the start script (which advertises that host port) and
// waits for the broker to be unfenced. The container's command waits for the
// script, then runs the image's own entry point (/etc/kafka/docker/run),
// which turns the KAFKA_* variables into server.properties.
func startApacheKafka(ctx context.Context, c testcontainers.Container) error {
	if err := wait.ForMappedPort(containerClientPort).WaitUntilReady(ctx, c); err != nil {
		return fmt.Errorf("waiting for the client port: %w", err)
	}
	endpoint, err := c.PortEndpoint(ctx, containerClientPort, "PLAINTEXT")
	if err != nil {
		return fmt.Errorf("client port endpoint: %w", err)
	}
	inspect, err := c.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("inspecting the container: %w", err)
	}
	script := fmt.Sprintf("#!/bin/bash\nexport KAFKA_ADVERTISED_LISTENERS=%s,BROKER://%s:9092\nexec /etc/kafka/docker/run\n",
		endpoint, inspect.Config.Hostname)
	if err := c.CopyToContainer(ctx, []byte(script), containerStartFile, 0o755); err != nil {
		return fmt.Errorf("copying the start script: %w", err)
	}
	return wait.ForLog(".*Transitioning from RECOVERY to RUNNING.*").AsRegexp().
		WithStartupTimeout(2*time.Minute).WaitUntilReady(ctx, c)
}

// waitAnswers polls until the broker answers metadata with a controller.
func waitAnswers(ctx context.Context, brokers []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		md, err := adm.BrokerMetadata(actx)
		cancel()
		if err == nil && md.Controller >= 0 && len(md.Brokers) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("broker did not answer metadata: %v (last error: %v)", ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// newClusterID returns a random KRaft cluster id (a base64url UUID).
func newClusterID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// stopContainer removes the container if one was started.
func stopContainer() {
	if containerKafka == nil {
		return
	}
	if err := testcontainers.TerminateContainer(containerKafka); err != nil {
		fmt.Fprintln(os.Stderr, "kafkatest: removing the Kafka container:", err)
	}
	containerKafka = nil
}
