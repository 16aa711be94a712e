// Command testcontainers starts an Apache Kafka container with
// testcontainers-go and runs kbatch's test suites against it, for machines
// that have Docker but no Kafka. It is a module of its own so that
// testcontainers-go and its Docker and OpenTelemetry dependencies stay out
// of the go.mod of every service that embeds kbatch.
//
// From the repository root:
//
//	go -C testcontainers run .                         # go test -race -count=1 ./... on the container
//	go -C testcontainers run . -- -run TestRebalance ./consumer/
//	go -C testcontainers run . -serve                  # start it, print KAFKA_BROKERS, wait for Ctrl-C
//	go -C testcontainers run . -image apache/kafka:4.2.0
//
// The container runs apache/kafka:4.3.1 (or -image, or
// KBATCH_TESTCONTAINERS_IMAGE) with the group settings of scripts/kafka, so
// suites behave as on the CI broker. The suites run with KAFKA_BROKERS set
// to the container's mapped port and KBATCH_TESTCONTAINERS=1, which tells
// internal/kafkatest the broker is a container: the chaos suite's broker
// restart and the interop suite (both drive scripts/kafka) skip themselves.
// Other variables (KBATCH_CHAOS, ...) pass through. The container is removed
// when the run ends, and by testcontainers' reaper if this process dies.
//
// The exit status is the suites' own; 2 means the container could not be
// started (3 when no Docker engine answers).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// EnvImage overrides DefaultImage when -image is not given.
const EnvImage = "KBATCH_TESTCONTAINERS_IMAGE"

// rootModule is the module whose suites run.
const rootModule = "github.com/kbatch/kbatch"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("testcontainers", flag.ContinueOnError)
	image := fs.String("image", imageFromEnv(os.Getenv), "Kafka image to run")
	serve := fs.Bool("serve", false, "start the broker, print its address, and keep it until interrupted instead of running the suites")
	dir := fs.String("dir", "", "directory of kbatch's go.mod, where go test runs (default: found above the working directory)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: go -C testcontainers run . [-image IMAGE] [-serve] [-dir DIR] [-- go test arguments]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root := *dir
	if root == "" && !*serve {
		wd, err := os.Getwd()
		if err == nil {
			root, err = findRoot(wd)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "testcontainers:", err)
			return 2
		}
	}

	fmt.Fprintf(os.Stderr, "testcontainers: starting %s (pulling it the first time)\n", *image)
	t0 := time.Now()
	k, err := startKafka(ctx, *image)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testcontainers:", err)
		if errors.Is(err, errNoDocker) {
			fmt.Fprintln(os.Stderr, "testcontainers: start Docker, or use scripts/kafka/kafka.sh up (no Docker needed) and KAFKA_BROKERS=127.0.0.1:9092")
			return 3
		}
		return 2
	}
	defer func() {
		if err := k.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testcontainers: removing the container:", err)
		}
	}()
	brokers := strings.Join(k.brokers, ",")
	fmt.Fprintf(os.Stderr, "testcontainers: %s answers on %s (%s)\n", *image, brokers, time.Since(t0).Round(time.Second))

	if *serve {
		fmt.Printf("KAFKA_BROKERS=%s\n", brokers)
		fmt.Fprintln(os.Stderr, "testcontainers: Ctrl-C removes the container")
		<-ctx.Done()
		return 0
	}

	goArgs := append([]string{"test"}, testArgs(fs.Args())...)
	fmt.Fprintf(os.Stderr, "testcontainers: KAFKA_BROKERS=%s go %s (in %s)\n", brokers, strings.Join(goArgs, " "), root)
	cmd := exec.CommandContext(ctx, "go", goArgs...)
	cmd.Dir = root
	cmd.Env = childEnv(os.Environ(), brokers)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // let go test print what it has
	cmd.WaitDelay = 30 * time.Second
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return ee.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "testcontainers: go test:", err)
		return 1
	}
}

// imageFromEnv returns the image named by KBATCH_TESTCONTAINERS_IMAGE, or
// DefaultImage.
func imageFromEnv(getenv func(string) string) string {
	if img := getenv(EnvImage); img != "" {
		return img
	}
	return DefaultImage
}

// testArgs returns the go test arguments: the ones given, or the whole
// suite under the race detector.
func testArgs(given []string) []string {
	if len(given) > 0 {
		return given
	}
	return []string{"-race", "-count=1", "-timeout", "30m", "./..."}
}

// childEnv is env with KAFKA_BROKERS set to brokers and
// KBATCH_TESTCONTAINERS=1, replacing any value they had.
func childEnv(env []string, brokers string) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == "KAFKA_BROKERS" || k == "KBATCH_TESTCONTAINERS" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "KAFKA_BROKERS="+brokers, "KBATCH_TESTCONTAINERS=1")
}

// findRoot returns the nearest directory at or above dir whose go.mod
// declares kbatch's root module.
func findRoot(dir string) (string, error) {
	for d := dir; ; {
		if mod, err := modulePath(filepath.Join(d, "go.mod")); err == nil && mod == rootModule {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod of %s at or above %s; pass -dir", rootModule, dir)
		}
		d = parent
	}
}

// modulePath reads the module line of a go.mod.
func modulePath(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s has no module line", gomod)
}
