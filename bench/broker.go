//go:build !memchild

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// childEnv, when set in the environment (to a broker count), makes this
// program serve an embedded kfake cluster instead of running the suite: the
// suite starts itself again as its broker, so that the broker's CPU,
// allocations and heap stay out of the client's measurements (kfake keeps
// every record in memory: in the same process it would also slow the
// garbage collector's pace and flatter allocating clients).
const childEnv = "KBATCH_BENCH_KFAKE_CHILD"

// childAddrPrefix starts the one line the child writes on stdout.
const childAddrPrefix = "kfake-listening "

// broker is the cluster a run talks to.
type broker struct {
	Addrs []string
	Kind  string // "kfake (child process)", "kfake (in process)", "external"
	close func() error
}

// Close stops the broker if the suite started it.
func (b *broker) Close() error {
	if b.close == nil {
		return nil
	}
	return b.close()
}

// externalBroker names brokers the suite does not own.
func externalBroker(addrs []string) *broker {
	return &broker{Addrs: addrs, Kind: "external"}
}

// startKfakeInProcess starts kfake in this process (tests, and -kfake-inproc).
func startKfakeInProcess(n int) (*broker, error) {
	c, err := newKfake(n)
	if err != nil {
		return nil, err
	}
	return &broker{Addrs: c.ListenAddrs(), Kind: fmt.Sprintf("kfake, %d brokers, in process", n), close: func() error {
		c.Close()
		return nil
	}}, nil
}

func newKfake(n int) (*kfake.Cluster, error) {
	return kfake.NewCluster(kfake.NumBrokers(n), kfake.AllowAutoTopicCreation())
}

// startKfakeChild starts this program again as a kfake broker and reads the
// addresses it listens on. The child stops when its stdin closes, which also
// happens when this process dies.
func startKfakeChild(n int) (*broker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: finding own executable for the broker process: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting the broker process: %w", err)
	}
	waited := make(chan error, 1)
	stop := func() error {
		stdin.Close()
		select {
		case err := <-waited:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			return errors.Join(errors.New("bench: broker process did not stop; killed"), <-waited)
		}
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
		waited <- cmd.Wait()
	}()
	select {
	case line, ok := <-lines:
		if !ok || !strings.HasPrefix(line, childAddrPrefix) {
			_ = stop()
			return nil, fmt.Errorf("bench: broker process said %q, not its addresses", line)
		}
		addrs := strings.Split(strings.TrimPrefix(line, childAddrPrefix), ",")
		return &broker{Addrs: addrs, Kind: fmt.Sprintf("kfake, %d brokers, child process", n), close: stop}, nil
	case <-time.After(30 * time.Second):
		_ = stop()
		return nil, errors.New("bench: broker process did not start within 30s")
	}
}

// serveKfakeChild is the child's main: it serves until stdin closes.
func serveKfakeChild(nbrokers string) int {
	n, err := strconv.Atoi(nbrokers)
	if err != nil || n < 1 {
		fmt.Fprintf(os.Stderr, "bench broker: bad %s=%q\n", childEnv, nbrokers)
		return 2
	}
	c, err := newKfake(n)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench broker: %v\n", err)
		return 1
	}
	defer c.Close()
	fmt.Fprintf(os.Stdout, "%s%s\n", childAddrPrefix, strings.Join(c.ListenAddrs(), ","))
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it or dies
	return 0
}
