package kafkatest

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

// Guards the broker switch the chaos and interop suites read: a container
// run must not look like KAFKA_BROKERS (they would restart the broker with
// scripts/kafka), and nothing set must mean kfake.
func TestKindFollowsTheEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name, brokers, containers, want string
	}{
		{"nothing set is the embedded broker", "", "", "kfake"},
		{"KAFKA_BROKERS is an existing cluster", "127.0.0.1:9092", "", "env"},
		{"both set is a container from the testcontainers module", "127.0.0.1:32771", "1", "testcontainers"},
		{"a false KBATCH_TESTCONTAINERS is ignored", "127.0.0.1:9092", "0", "env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KAFKA_BROKERS", tc.brokers)
			t.Setenv(EnvTestcontainers, tc.containers)
			if got := Kind(); got != tc.want {
				t.Errorf("Kind() = %q, want %q", got, tc.want)
			}
			if got, want := IsReal(), tc.want != "kfake"; got != want {
				t.Errorf("IsReal() = %v, want %v", got, want)
			}
		})
	}
}

// fatalTB records Fatalf and stops its goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = format
	runtime.Goexit()
}

// Guards the old way of asking for a container (KBATCH_TESTCONTAINERS=1
// alone): it must fail with directions, not fall back to kfake and let a
// run that was meant for real Kafka pass on the embedded broker.
func TestTestcontainersAloneSaysHowToStartTheContainer(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv(EnvTestcontainers, "1")
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Brokers(tb)
	}()
	<-done
	if !strings.Contains(tb.msg, "go -C testcontainers run .") {
		t.Fatalf("Brokers with only %s=1 did not fail with directions; message: %q", EnvTestcontainers, tb.msg)
	}
}

// Guards the wrapper's ProduceN contract the consumer tests rely on: with
// partitions > 0 every partition gets an even share.
func TestProduceNSpreadsEvenlyAndNewTopicIsUnique(t *testing.T) {
	brokers := Brokers(t)
	a, b := NewTopic(t, 3), NewTopic(t, 3)
	if a == b {
		t.Fatalf("NewTopic gave %q twice", a)
	}
	if err := ProduceN(t.Context(), brokers, a, 30, 3, func(int) []byte { return nil }); err != nil {
		t.Fatal(err)
	}
	end := EndOffsets(t, brokers, a)
	for p := range int32(3) {
		if end[p] != 10 {
			t.Errorf("partition %d: %d records, want 10 (all %v)", p, end[p], end)
		}
	}
	if got := CommittedOffsets(t, brokers, NewGroup(t), a); len(got) != 0 {
		t.Errorf("a new group has committed offsets %v", got)
	}
}
