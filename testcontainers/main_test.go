package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Guards the suites' environment: a KAFKA_BROKERS left over from the shell
// must not win over the container, and internal/kafkatest must learn the
// broker is a container (so the chaos suite does not try to restart it with
// scripts/kafka).
func TestChildEnvPointsTheSuitesAtTheContainer(t *testing.T) {
	env := childEnv([]string{"HOME=/root", "KAFKA_BROKERS=127.0.0.1:9092", "KBATCH_TESTCONTAINERS=0", "KBATCH_CHAOS=1"}, "localhost:32771")
	want := []string{"HOME=/root", "KBATCH_CHAOS=1", "KAFKA_BROKERS=localhost:32771", "KBATCH_TESTCONTAINERS=1"}
	if !slices.Equal(env, want) {
		t.Errorf("childEnv = %q, want %q", env, want)
	}
}

func TestTestArgsDefaultToTheWholeSuiteUnderRace(t *testing.T) {
	for _, tc := range []struct {
		name  string
		given []string
		want  string
	}{
		{"nothing given runs every package with -race", nil, "-race -count=1 -timeout 30m ./..."},
		{"given arguments are passed as they are", []string{"-run", "TestX", "./consumer/"}, "-run TestX ./consumer/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(testArgs(tc.given), " "); got != tc.want {
				t.Errorf("testArgs(%q) = %q, want %q", tc.given, got, tc.want)
			}
		})
	}
}

func TestImageComesFromTheEnvironmentOrTheDefault(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if got := imageFromEnv(getenv); got != DefaultImage {
		t.Errorf("no %s: image %q, want %q", EnvImage, got, DefaultImage)
	}
	env[EnvImage] = "apache/kafka:4.2.0"
	if got := imageFromEnv(getenv); got != "apache/kafka:4.2.0" {
		t.Errorf("%s set: image %q", EnvImage, got)
	}
}

// Guards the default -dir: run from testcontainers/, go test must run in the
// repository root, not in this module (whose ./... has no suites), and a
// go.mod of another module on the way up must be passed over.
func TestFindRootSkipsOtherModules(t *testing.T) {
	root := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "go.mod"), "module "+strconv.Quote(rootModule)+"\n\ngo 1.26.0\n")
	write(filepath.Join(root, "testcontainers", "go.mod"), "// the runner\nmodule github.com/kbatch/kbatch/testcontainers\n")
	got, err := findRoot(filepath.Join(root, "testcontainers"))
	if err != nil || got != root {
		t.Fatalf("findRoot = %q, %v; want %q", got, err, root)
	}
	if _, err := findRoot(t.TempDir()); err == nil {
		t.Error("findRoot outside any kbatch checkout returned no error")
	}
}

// The real thing, where Docker is: start the container and probe it. Opt in
// with KBATCH_TESTCONTAINERS=1 (it pulls an image).
func TestKafkaContainerAnswers(t *testing.T) {
	if on, _ := strconv.ParseBool(os.Getenv("KBATCH_TESTCONTAINERS")); !on {
		t.Skip("set KBATCH_TESTCONTAINERS=1 to start a Kafka container (needs Docker)")
	}
	k, err := startKafka(t.Context(), imageFromEnv(os.Getenv))
	if err != nil {
		t.Fatal(err)
	}
	defer k.stop()
	if len(k.brokers) == 0 {
		t.Fatal("no bootstrap address")
	}
}
