package interop

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kbatch/kbatch/batcher"
	"github.com/kbatch/kbatch/consumer"
	"github.com/kbatch/kbatch/internal/kafkatest"
	"github.com/kbatch/kbatch/offsets"
)

const (
	records    = 20000
	partitions = 4
	groupCmd   = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
)

// tools are the external programs the test drives.
type tools struct {
	brokers string // KAFKA_BROKERS, as given
	kcat    string
	kafkaSh string
}

// needTools skips the test, saying why, unless the interop run was asked for
// and everything it needs is there.
func needTools(t *testing.T) tools {
	t.Helper()
	if os.Getenv("KBATCH_INTEROP") != "1" {
		t.Skip("interop suite skipped: set KBATCH_INTEROP=1 and KAFKA_BROKERS (a real broker: scripts/kafka/kafka.sh up)")
	}
	brokers := os.Getenv("KAFKA_BROKERS")
	if brokers == "" || kafkatest.Kind() != "env" {
		t.Skip("interop suite skipped: it needs a real broker named by KAFKA_BROKERS (and KBATCH_TESTCONTAINERS unset), e.g. scripts/kafka/kafka.sh up; KAFKA_BROKERS=127.0.0.1:9092")
	}
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("interop suite skipped: kcat is not on PATH (scripts/kafka/kafka.sh ensure-kcat installs it)")
	}
	if _, err := exec.LookPath("java"); err != nil && os.Getenv("JAVA_HOME") == "" && os.Getenv("KBATCH_KAFKA_JAVA") == "" {
		t.Skip("interop suite skipped: java is not on PATH (Kafka's ConsumerGroupCommand needs Java 17+)")
	}
	sh, err := filepath.Abs(filepath.Join("..", "scripts", "kafka", "kafka.sh"))
	if err == nil {
		_, err = os.Stat(sh)
	}
	if err != nil {
		t.Skipf("interop suite skipped: scripts/kafka/kafka.sh not found: %v", err)
	}
	return tools{brokers: brokers, kcat: kcat, kafkaSh: sh}
}

// TestKcatRecordsConsumedAndJavaToolSeesNoLag guards interoperability: what a
// non-Go producer writes reaches the handler intact (keys and values), and
// the offsets kbatch commits (on revoke and close, through its windowing
// manager) are the group's offsets for Kafka's own tooling: LAG 0 on every
// partition once the group has closed.
func TestKcatRecordsConsumedAndJavaToolSeesNoLag(t *testing.T) {
	tl := needTools(t)
	for _, proto := range []consumer.Protocol{consumer.ProtocolClassic, consumer.ProtocolConsumer} {
		t.Run(proto.String(), func(t *testing.T) {
			topic := kafkatest.NewTopic(t, partitions)
			group := kafkatest.NewGroup(t)

			produceWithKcat(t, tl, topic)
			got := consumeAll(t, tl, topic, group, proto)
			for i := range records {
				k := fmt.Sprintf("k%d", i)
				if v, ok := got[k]; !ok {
					t.Errorf("key %s never reached the handler", k)
				} else if want := value(i); v != want {
					t.Errorf("key %s: value %q, want %q", k, v, want)
				}
				if t.Failed() {
					break
				}
			}

			rows, out := describeOffsets(t, tl, group)
			var total int64
			seen := map[int]bool{}
			for _, r := range rows {
				if r.topic != topic {
					continue
				}
				seen[r.partition] = true
				total += r.logEnd
				if r.lag != 0 || r.current != r.logEnd {
					t.Errorf("partition %d: CURRENT-OFFSET %d, LOG-END-OFFSET %d, LAG %d; want LAG 0", r.partition, r.current, r.logEnd, r.lag)
				}
			}
			if len(seen) != partitions || total != records {
				t.Errorf("ConsumerGroupCommand shows %d partitions holding %d records, want %d and %d", len(seen), total, partitions, records)
			}
			if t.Failed() {
				t.Logf("ConsumerGroupCommand output:\n%s", out)
				return
			}
			t.Logf("%s: kcat produced %d records; kbatch consumed them all; ConsumerGroupCommand: LAG 0 on all %d partitions:\n%s", proto, records, partitions, out)
		})
	}
}

func value(i int) string { return fmt.Sprintf("v%d-from-kcat", i) }

// produceWithKcat writes records key:value lines and has kcat produce them,
// keyed (-K:), and wait for every acknowledgement before it exits.
func produceWithKcat(t *testing.T, tl tools, topic string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "records.txt")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range records {
		fmt.Fprintf(w, "k%d:%s\n", i, value(i))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tl.kcat, "-b", tl.brokers, "-t", topic, "-P", "-K:", "-l", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}
	end := kafkatest.EndOffsets(t, strings.Split(tl.brokers, ","), topic)
	var n int64
	for _, e := range end {
		n += e
	}
	if n != records {
		t.Fatalf("after kcat the topic holds %d records, want %d", n, records)
	}
}

// consumeAll runs one kbatch member until it has handled every key, closes
// it, and returns key -> value.
func consumeAll(t *testing.T, tl tools, topic, group string, proto consumer.Protocol) map[string]string {
	t.Helper()
	var (
		mu   sync.Mutex
		got  = map[string]string{}
		all  = make(chan struct{})
		once sync.Once
	)
	c, err := consumer.New(consumer.Config{
		Brokers:  strings.Split(tl.brokers, ","),
		Group:    group,
		Topics:   []string{topic},
		Protocol: proto,
		Batch:    batcher.Policy{MaxRecords: 500, MaxWait: 100 * time.Millisecond},
		Commit:   offsets.Policy{EveryRecords: 5000, Interval: time.Second},
	}, func(_ context.Context, b *consumer.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range b.Records {
			got[string(r.Key)] = string(r.Value)
		}
		if len(got) >= records {
			once.Do(func() { close(all) })
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(context.Background()) }()
	select {
	case <-all:
	case err := <-runErr:
		t.Fatalf("Run returned before every record arrived: %v", err)
	case <-time.After(2 * time.Minute):
		_ = c.Close()
		mu.Lock()
		n := len(got)
		mu.Unlock()
		t.Fatalf("after 2m the handler had %d of %d keys", n, records)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return got
}

type offsetRow struct {
	topic                string
	partition            int
	current, logEnd, lag int64
}

// describeOffsets runs ConsumerGroupCommand --describe --offsets and parses
// its table (GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...).
func describeOffsets(t *testing.T, tl tools, group string) ([]offsetRow, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", tl.kafkaSh, "run-class", groupCmd,
		"--bootstrap-server", tl.brokers, "--describe", "--group", group, "--offsets")
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	if err != nil {
		t.Fatalf("%s --describe: %v\n%s", groupCmd, err, out)
	}
	rows, err := parseOffsets(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return rows, out
}

// parseOffsets reads the table ConsumerGroupCommand prints; columns are found
// by their header names, so added or reordered columns do not matter.
func parseOffsets(out string) ([]offsetRow, error) {
	var (
		col  map[string]int
		rows []offsetRow
	)
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if col == nil {
			if f[0] == "GROUP" && strings.Contains(line, "LAG") {
				col = map[string]int{}
				for i, name := range f {
					col[name] = i
				}
				for _, need := range []string{"TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"} {
					if _, ok := col[need]; !ok {
						return nil, fmt.Errorf("ConsumerGroupCommand header has no %s column: %q", need, line)
					}
				}
			}
			continue
		}
		if len(f) < len(col) {
			continue // a note, not a row
		}
		num := func(name string) (int64, error) {
			return strconv.ParseInt(f[col[name]], 10, 64)
		}
		p, err1 := num("PARTITION")
		cur, err2 := num("CURRENT-OFFSET")
		end, err3 := num("LOG-END-OFFSET")
		lag, err4 := num("LAG")
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return nil, fmt.Errorf("ConsumerGroupCommand row does not parse (a partition without a committed offset shows '-'): %q", line)
		}
		rows = append(rows, offsetRow{topic: f[col["TOPIC"]], partition: int(p), current: cur, logEnd: end, lag: lag})
	}
	if col == nil {
		return nil, fmt.Errorf("no offsets table in the ConsumerGroupCommand output")
	}
	return rows, nil
}
