package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kbatch/kbatch/consumer"
)

// buildMember builds chaos/member once into a temporary directory.
func buildMember(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "member")
	goTool := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		goTool = filepath.Join(root, "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", bin, "./member")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building chaos/member: %v\n%s", err, out)
	}
	return bin
}

// proc is one incarnation of a member process.
type proc struct {
	slot, inc int
	name      string
	cmd       *exec.Cmd
	ledger    string
	stats     string
	log       string
	started   time.Time

	done     chan struct{} // closed when the process has exited
	exitErr  error         // set before done is closed
	expected atomic.Bool   // the driver asked it to stop (or killed it)
}

// group runs the member processes: slot i always has at most one live
// incarnation. Processes that exit without being asked are reported on
// unexpected; the driver restarts them and counts them as crashes.
type group struct {
	t    *testing.T
	bin  string
	dir  string
	args []string // common flags

	mu    sync.Mutex
	live  []*proc // per slot; nil while down
	all   []*proc
	incs  []int
	procs sync.WaitGroup // one waiter goroutine per started process

	unexpected chan *proc
}

func newGroup(t *testing.T, bin, dir string, slots int, args []string) *group {
	g := &group{
		t: t, bin: bin, dir: dir, args: args,
		live: make([]*proc, slots), incs: make([]int, slots),
		unexpected: make(chan *proc, 64),
	}
	// Whatever happens to the test, no member outlives it.
	t.Cleanup(func() {
		g.mu.Lock()
		live := append([]*proc(nil), g.all...)
		g.mu.Unlock()
		for _, p := range live {
			select {
			case <-p.done:
			default:
				p.expected.Store(true)
				_ = p.cmd.Process.Kill()
			}
		}
		g.procs.Wait()
	})
	return g
}

// start starts a new incarnation in slot.
func (g *group) start(slot int) (*proc, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.live[slot] != nil {
		return nil, fmt.Errorf("slot %d already runs %s", slot, g.live[slot].name)
	}
	g.incs[slot]++
	p := &proc{slot: slot, inc: g.incs[slot], done: make(chan struct{})}
	p.name = fmt.Sprintf("m%d.%d", slot, p.inc)
	p.ledger = filepath.Join(g.dir, p.name+".ledger")
	p.stats = filepath.Join(g.dir, p.name+".stats.json")
	p.log = filepath.Join(g.dir, p.name+".log")
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	args := append([]string{"-name", p.name, "-ledger", p.ledger, "-stats", p.stats}, g.args...)
	p.cmd = exec.Command(g.bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = memberProcAttr()
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.started = time.Now()
	g.live[slot] = p
	g.all = append(g.all, p)
	g.procs.Add(1)
	go func() {
		defer g.procs.Done()
		p.exitErr = p.cmd.Wait()
		logf.Close()
		g.mu.Lock()
		if g.live[p.slot] == p {
			g.live[p.slot] = nil
		}
		g.mu.Unlock()
		close(p.done)
		if !p.expected.Load() {
			select {
			case g.unexpected <- p:
			default: // the driver stopped listening; crashed() still counts it
			}
		}
	}()
	return p, nil
}

// liveProcs returns the running incarnations.
func (g *group) liveProcs() []*proc {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*proc
	for _, p := range g.live {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// kill SIGKILLs p and waits for it to be gone.
func (g *group) kill(p *proc) error { return g.signal(p, syscall.SIGKILL, "SIGKILL") }

// quit sends SIGQUIT (the Go runtime prints every goroutine to the log and
// exits) and waits for p to be gone; one that outlives it is killed.
func (g *group) quit(p *proc) error {
	err := g.signal(p, syscall.SIGQUIT, "SIGQUIT")
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
		err = fmt.Errorf("%w; killed", err)
	}
	return err
}

// signal sends sig (named name) to p, whose exit is expected, and waits up
// to 30 s for it to be gone.
func (g *group) signal(p *proc, sig syscall.Signal, name string) error {
	p.expected.Store(true)
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s %s: %w", name, p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s still running 30s after %s", p.name, name)
	}
}

// term sends SIGTERM (the member calls Close) and waits up to limit for a
// clean exit. A member that does not make it is killed, and that is an
// error: graceful close must drain, commit and leave within a bound.
func (g *group) term(p *proc, limit time.Duration) error {
	p.expected.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		if p.exitErr != nil {
			return fmt.Errorf("%s exited with %v after SIGTERM; log tail:\n%s", p.name, p.exitErr, tail(p.log, 20))
		}
		return nil
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed; log tail:\n%s", p.name, limit, tail(p.log, 20))
	}
}

// pause waits d, or until ctx ends, restarting any member that exits on its
// own meanwhile (and reporting it through onCrash).
func (g *group) pause(ctx context.Context, d time.Duration, onCrash func(*proc)) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return nil
		case p := <-g.unexpected:
			onCrash(p)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// crashed returns the incarnations that exited without being asked to.
func (g *group) crashed() []*proc {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*proc
	for _, p := range g.all {
		select {
		case <-p.done:
			if !p.expected.Load() {
				out = append(out, p)
			}
		default:
		}
	}
	return out
}

// memberStats reads the last Stats each incarnation wrote (a SIGKILLed one
// wrote them at most 500 ms before it died).
func (g *group) memberStats() []consumer.Stats {
	g.mu.Lock()
	all := append([]*proc(nil), g.all...)
	g.mu.Unlock()
	var out []consumer.Stats
	for _, p := range all {
		data, err := os.ReadFile(p.stats)
		if err != nil {
			continue // killed before its first write
		}
		var st consumer.Stats
		if json.Unmarshal(data, &st) == nil {
			out = append(out, st)
		}
	}
	return out
}

// owns reports whether p owns partitions, as far as the stats it last wrote
// tell (at most 500 ms old), and has no JoinGroup in flight: it is a member
// of the group's current generation, not one waiting for its first join's
// answer (a member that lost its partitions owns none until it joins again,
// as a new member), nor one rejoining in a rebalance while it keeps its
// partitions (the cooperative protocol). The member keeps the file
// <stats>.joining while a JoinGroup of its own is in flight.
func (g *group) owns(p *proc) bool {
	if _, err := os.Stat(p.stats + ".joining"); err == nil {
		return false
	}
	data, err := os.ReadFile(p.stats)
	if err != nil {
		return false
	}
	var st consumer.Stats
	return json.Unmarshal(data, &st) == nil && st.OwnedPartitions > 0
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
