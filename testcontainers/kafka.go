package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/kbatch/kbatch/kbatchtest"
)

// DefaultImage is the image run when -image and KBATCH_TESTCONTAINERS_IMAGE
// are unset: the same Kafka release as scripts/kafka (the CI broker) and the
// docker-compose stack.
const DefaultImage = "apache/kafka:4.3.1"

// The Kafka module lays the broker out as: PLAINTEXT on 9093 (mapped to a
// random host port; the one clients use), BROKER on 9092 (inter-broker),
// CONTROLLER on 9094. Its start-up script is written for Confluent's
// images; for apache/kafka we replace the command and the post-start hook
// and keep the module's listener layout and settings.
const (
	clientPort = "9093/tcp"
	startFile  = "/tmp/kbatch-testcontainers-start.sh"
	startWait  = 3 * time.Minute // includes pulling the image
)

// errNoDocker marks a start that failed because no Docker engine answered.
var errNoDocker = errors.New("no Docker engine answers")

// brokerSettings are the same test-friendly group settings as scripts/kafka's
// server.properties, so a suite behaves alike on both: KIP-848 sessions down
// to 6 s, classic sessions down to 1 s, every internal topic at replication
// factor 1, and no delay before the first rebalance.
var brokerSettings = map[string]string{
	"KAFKA_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS":             "1000",
	"KAFKA_GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS":         "500",
	"KAFKA_GROUP_CONSUMER_SESSION_TIMEOUT_MS":                "10000",
	"KAFKA_GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS":            "6000",
	"KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS":                     "1000",
	"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":                 "0",
	"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
	"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            "1",
	"KAFKA_NUM_PARTITIONS":                                   "1",
	"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                        "true",
}

// kafka is a running broker container.
type kafka struct {
	c       *tckafka.KafkaContainer
	brokers []string
}

// startKafka runs image and waits until the broker creates a topic.
func startKafka(ctx context.Context, image string) (*kafka, error) {
	ctx, cancel := context.WithTimeout(ctx, startWait)
	defer cancel()

	hctx, hcancel := context.WithTimeout(ctx, 15*time.Second)
	err := dockerAnswers(hctx)
	hcancel()
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", errNoDocker, err)
	}

	clusterID, err := newClusterID()
	if err != nil {
		return nil, err
	}
	c, err := tckafka.Run(ctx, image,
		tckafka.WithClusterID(clusterID),
		testcontainers.WithEnv(brokerSettings),
		dropEnv("KAFKA_REST_BOOTSTRAP_SERVERS"), // Confluent's REST proxy; not a broker setting
		testcontainers.WithCmd("-c", "while [ ! -f "+startFile+" ]; do sleep 0.1; done; exec bash "+startFile),
		testcontainers.WithLifecycleHooks(testcontainers.ContainerLifecycleHooks{
			PostStarts: []testcontainers.ContainerHook{startApacheKafka},
		}),
	)
	if err != nil {
		if c != nil {
			_ = testcontainers.TerminateContainer(c)
		}
		return nil, fmt.Errorf("starting %s: %w", image, err)
	}
	k := &kafka{c: c}
	if k.brokers, err = c.Brokers(ctx); err != nil {
		k.stop()
		return nil, fmt.Errorf("reading the bootstrap address of %s: %w", image, err)
	}
	if err := probe(ctx, k.brokers); err != nil {
		k.stop()
		return nil, fmt.Errorf("%s on %v: %w", image, k.brokers, err)
	}
	return k, nil
}

// stop removes the container (testcontainers' reaper removes it too if
// this process dies first).
func (k *kafka) stop() error {
	return testcontainers.TerminateContainer(k.c)
}

// dockerAnswers pings the Docker engine testcontainers would use
// (DOCKER_HOST, ~/.testcontainers.properties, the usual sockets).
func dockerAnswers(ctx context.Context) (err error) {
	defer func() {
		// Older testcontainers releases panicked when no Docker host was
		// found; keep the error path working if that comes back.
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
	if err := wait.ForMappedPort(clientPort).WaitUntilReady(ctx, c); err != nil {
		return fmt.Errorf("waiting for the client port: %w", err)
	}
	endpoint, err := c.PortEndpoint(ctx, clientPort, "PLAINTEXT")
	if err != nil {
		return fmt.Errorf("client port endpoint: %w", err)
	}
	inspect, err := c.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("inspecting the container: %w", err)
	}
	script := fmt.Sprintf("#!/bin/bash\nexport KAFKA_ADVERTISED_LISTENERS=%s,BROKER://%s:9092\nexec /etc/kafka/docker/run\n",
		endpoint, inspect.Config.Hostname)
	if err := c.CopyToContainer(ctx, []byte(script), startFile, 0o755); err != nil {
		return fmt.Errorf("copying the start script: %w", err)
	}
	return wait.ForLog(".*Transitioning from RECOVERY to RUNNING.*").AsRegexp().
		WithStartupTimeout(2*time.Minute).WaitUntilReady(ctx, c)
}

// probe creates and deletes a throwaway topic: the broker answers metadata,
// has a controller, and gives new partitions a leader.
func probe(ctx context.Context, brokers []string) error {
	k, err := kbatchtest.Connect(brokers...)
	if err != nil {
		return err
	}
	defer k.Close()
	topic := kbatchtest.UniqueName("kbatch-probe")
	if err := k.CreateTopic(ctx, topic, 1); err != nil {
		return err
	}
	adm, err := k.Admin()
	if err != nil {
		return err
	}
	_, err = adm.DeleteTopics(ctx, topic)
	return err
}

// newClusterID returns a random KRaft cluster id (a base64url UUID).
func newClusterID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
