//go:build !memchild

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// consumerPerfClass is Kafka's own consumer benchmark (kafka-tools, 4.x).
const consumerPerfClass = "org.apache.kafka.tools.ConsumerPerformance"

// javaRef runs ConsumerPerformance through scripts/kafka/kafka.sh run-class,
// which resolves the Kafka jars with Maven and runs java on them.
type javaRef struct {
	script  string
	version string
	timeout time.Duration
}

// findJavaRef finds kafka.sh (the -kafka-sh flag, else scripts/kafka/kafka.sh
// of the repository, looked for from the working directory upwards) and
// checks that it can run ConsumerPerformance. It returns why not otherwise.
func findJavaRef(ctx context.Context, script string, timeout time.Duration) (*javaRef, error) {
	if script == "" {
		var err error
		if script, err = findUp(filepath.Join("scripts", "kafka", "kafka.sh")); err != nil {
			return nil, err
		}
	}
	st, err := os.Stat(script)
	if err != nil {
		return nil, fmt.Errorf("no %s: %w", script, err)
	}
	if st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("%s is not executable", script)
	}
	if _, err := exec.LookPath("java"); err != nil && os.Getenv("JAVA_HOME") == "" && os.Getenv("KBATCH_KAFKA_JAVA") == "" {
		return nil, errors.New("no java on PATH and no JAVA_HOME")
	}
	// The first call may resolve the jars with Maven: allow it time.
	vctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := exec.CommandContext(vctx, script, "run-class", consumerPerfClass, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s run-class %s --version: %w: %s", script, consumerPerfClass, err, tail(out, 300))
	}
	lines := strings.Fields(strings.TrimSpace(string(out)))
	version := ""
	if len(lines) > 0 {
		version = lines[len(lines)-1]
	}
	return &javaRef{script: script, version: version, timeout: timeout}, nil
}

// findUp looks for rel in the working directory and its parents.
func findUp(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s in the working directory or above it", rel)
		}
		dir = parent
	}
}

// scenario is the Java reference as a table entry.
func (j *javaRef) scenario() Scenario {
	return Scenario{
		Key:      "java-perf",
		Name:     "Kafka ConsumerPerformance (Java " + j.version + ")",
		External: true,
		Run:      j.run,
	}
}

// run consumes the topic with ConsumerPerformance and reads its summary
// line. Its rate is the tool's fetch rate, which (like ours) leaves out the
// group join.
func (j *javaRef) run(ctx context.Context, env *Env) (Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	args := []string{"run-class", consumerPerfClass,
		"--bootstrap-server", strings.Join(env.Brokers, ","),
		"--topic", env.Topic,
		"--num-records", strconv.FormatInt(env.Check.Want(), 10),
		"--group", env.Group,
		"--timeout", strconv.FormatInt(env.Stall.Milliseconds(), 10),
	}
	cmd := exec.CommandContext(ctx, j.script, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res, perr := parseConsumerPerf(stdout.String())
	if err != nil {
		return Outcome{OwnCommits: -1, External: res}, fmt.Errorf("ConsumerPerformance: %w: %s", err, tail(stderr.Bytes(), 300))
	}
	if perr != nil {
		return Outcome{OwnCommits: -1}, fmt.Errorf("ConsumerPerformance: %w; stderr: %s", perr, tail(stderr.Bytes(), 300))
	}
	return Outcome{OwnCommits: -1, External: res}, nil
}

// parseConsumerPerf reads ConsumerPerformance's summary: a header line of
// comma-separated names starting with start.time, then a line of values.
func parseConsumerPerf(out string) (*ExternalResult, error) {
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		if !strings.HasPrefix(strings.TrimSpace(line), "start.time") || i+1 >= len(lines) {
			continue
		}
		names := splitTrim(line)
		values := splitTrim(lines[i+1])
		if len(values) != len(names) {
			return nil, fmt.Errorf("summary has %d names and %d values: %q", len(names), len(values), lines[i+1])
		}
		get := func(name string) (float64, error) {
			for k, n := range names {
				if n == name {
					return strconv.ParseFloat(values[k], 64)
				}
			}
			return 0, fmt.Errorf("summary lacks %s", name)
		}
		var errs []error
		num := func(name string) float64 {
			v, err := get(name)
			errs = append(errs, err)
			return v
		}
		res := &ExternalResult{
			Records:       int64(num("data.consumed.in.nMsg")),
			Bytes:         int64(num("data.consumed.in.MB") * (1 << 20)),
			RecordsPerSec: num("fetch.nMsg.sec"),
			MBPerSec:      num("fetch.MB.sec"),
			Elapsed:       time.Duration(num("fetch.time.ms") * float64(time.Millisecond)),
			Raw:           strings.TrimSpace(line + "\n" + lines[i+1]),
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		return res, nil
	}
	return nil, fmt.Errorf("no summary in the output: %s", tail([]byte(out), 300))
}

func splitTrim(s string) []string {
	f := strings.Split(s, ",")
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	return f
}

// tail is the last n bytes of b, on one line.
func tail(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return strings.ReplaceAll(s, "\n", " | ")
}
