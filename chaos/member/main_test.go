package main

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbatch/kbatch/internal/kafkatest"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.Run(m)) }

// TestJoinMarkerIsThereWhileAJoinGroupWaits holds the member's JoinGroup in
// the embedded broker and checks that the marker the chaos driver looks at
// exists exactly while the join waits.
func TestJoinMarkerIsThereWhileAJoinGroupWaits(t *testing.T) {
	c, err := kafkatest.NewEmbedded(kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	held := make(chan struct{}, 8)
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.JoinGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		held <- struct{}{}
		c.SleepControl(func() { <-release })
		return nil, nil, false // then handled as usual
	})

	stats := filepath.Join(t.TempDir(), "m.stats.json")
	marker := stats + ".joining"
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumerGroup("g"),
		kgo.ConsumeTopics("t"),
		kgo.WithHooks(newJoinMarker(stats)),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free() // before the client closes: its leave waits for the join
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for ctx.Err() == nil {
			cl.PollFetches(ctx)
		}
	}()
	defer func() { cancel(); <-polled }()

	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("no JoinGroup reached the broker")
	}
	// The write hook runs once the request is written; the broker holds it.
	waitFor(ctx, t, "the marker while the join is held", func() bool { return exists(marker) })

	free()
	waitFor(ctx, t, "an assignment", func() bool {
		_, gen := cl.GroupMetadata()
		return gen > 0
	})
	if exists(marker) {
		t.Fatalf("%s is still there after the join was answered", marker)
	}
}

func TestJoinMarkerWithoutStatsWritesNothing(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	j := newJoinMarker("")
	j.OnBrokerWrite(kgo.BrokerMetadata{}, int16(kmsg.JoinGroup), 1, 0, 0, nil)
	if j.path != "" {
		t.Fatalf("path %q without -stats", j.path)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) > 0 {
		t.Fatalf("files written without -stats: %v (%v)", ents, err)
	}
	j.OnBrokerRead(kgo.BrokerMetadata{}, int16(kmsg.JoinGroup), 1, 0, 0, nil)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func waitFor(ctx context.Context, t *testing.T, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
