package chaos

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kbatch/kbatch/internal/kafkatest"
)

// Knobs: a flag (go test ./chaos -args -chaos.records=100000) or the
// environment variable named in its default.
var (
	envErrs []string

	flagRecords    = flag.Int("chaos.records", envInt("KBATCH_CHAOS_RECORDS", 1_000_000), "records to produce (env KBATCH_CHAOS_RECORDS)")
	flagPartitions = flag.Int("chaos.partitions", envInt("KBATCH_CHAOS_PARTITIONS", 12), "partitions of the topic (env KBATCH_CHAOS_PARTITIONS)")
	flagMembers    = flag.Int("chaos.members", envInt("KBATCH_CHAOS_MEMBERS", 3), "member processes (env KBATCH_CHAOS_MEMBERS)")
	flagKills      = flag.Int("chaos.kills", envInt("KBATCH_CHAOS_KILLS", 6), "SIGKILLs, each followed by a restart (env KBATCH_CHAOS_KILLS)")
	flagStream     = flag.Duration("chaos.stream", envDuration("KBATCH_CHAOS_STREAM", 75*time.Second),
		"how long the members would take to handle every record if nothing failed (it paces their handlers); the chaos happens within it (env KBATCH_CHAOS_STREAM)")
	flagSeed      = flag.Uint64("chaos.seed", uint64(envInt("KBATCH_CHAOS_SEED", 0)), "random seed; 0 picks one, printed (env KBATCH_CHAOS_SEED)")
	flagProtocols = flag.String("chaos.protocols", envString("KBATCH_CHAOS_PROTOCOLS", "classic,consumer,classic+dedupe"),
		"variants to run: a group protocol (classic, consumer), +dedupe for members with the Kafka dedupe store (env KBATCH_CHAOS_PROTOCOLS)")
)

const (
	leaveLimit = 60 * time.Second // a graceful leave (SIGTERM -> Close) must finish within this
	tailLimit  = 3 * time.Minute  // after the chaos window, on top of -chaos.stream, to catch up
)

// TestChaos runs a group of member processes (chaos/member) over a topic of
// a million records while it SIGKILLs and restarts members, makes one leave
// gracefully and, on the CI broker, restarts the broker; then it checks every
// member's ledger: nothing lost, offsets increasing within each ownership
// run, duplicates counted (at-least-once), and the group's committed offsets
// at the end of the log. One subtest per group protocol.
//
// Guards invariants 1 (order), 2 (at-least-once: a commit never passes an
// unhandled record, so a SIGKILL cannot lose one), 4 (fencing: a member that
// lost its partitions does not commit over the new owner's progress, which
// would show as lost records) and 7 (graceful close within a bound).
func TestChaos(t *testing.T) {
	if os.Getenv("KBATCH_CHAOS") != "1" {
		t.Skip("chaos suite skipped: it takes minutes; run it with KBATCH_CHAOS=1 go test -v -timeout 40m ./chaos/ (KBATCH_CHAOS_RECORDS=100000 for a quick run)")
	}
	if len(envErrs) > 0 {
		t.Fatalf("chaos: bad environment: %s", strings.Join(envErrs, "; "))
	}
	if *flagMembers < 2 || *flagPartitions < *flagMembers || *flagRecords < *flagPartitions || *flagKills < 0 || *flagStream < 5*time.Second {
		t.Fatalf("chaos: need members >= 2, partitions >= members, records >= partitions, kills >= 0, stream >= 5s; got %d, %d, %d, %d, %s",
			*flagMembers, *flagPartitions, *flagRecords, *flagKills, *flagStream)
	}
	bin := buildMember(t)
	for _, variant := range strings.Split(*flagProtocols, ",") {
		variant = strings.TrimSpace(variant)
		proto, dedupe := strings.CutSuffix(variant, "+dedupe")
		if proto != "classic" && proto != "consumer" {
			t.Fatalf("chaos: unknown variant %q in -chaos.protocols (classic, consumer, either with +dedupe)", variant)
		}
		t.Run(variant, func(t *testing.T) { runChaos(t, bin, proto, dedupe, false) })
	}
}

type eventKind int

const (
	evKill eventKind = iota
	evLeave
	evBrokerRestart
)

type event struct {
	at   time.Duration // since the members started
	kind eventKind
}

// planEvents spreads the events, in random order, over 10%..80% of the
// stream: one per slot, at a random point of its slot.
func planEvents(rng *rand.Rand, kills int, brokerRestart bool, stream time.Duration) []event {
	kinds := []eventKind{evLeave}
	for range kills {
		kinds = append(kinds, evKill)
	}
	if brokerRestart {
		kinds = append(kinds, evBrokerRestart)
	}
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	start := stream / 10
	slot := (stream*8/10 - start) / time.Duration(len(kinds))
	evs := make([]event, len(kinds))
	for i, k := range kinds {
		evs[i] = event{at: start + slot*time.Duration(i) + time.Duration(rng.Int64N(int64(slot*8/10)+1)), kind: k}
	}
	return evs
}

// dedupeBatch is Batch.MaxRecords of the members of a +dedupe variant: with
// the dedupe store, a kill re-delivers at most the batch each of the member's
// partitions had in flight, so small batches make the bound on duplicates
// tight.
const dedupeBatch = 20

// laneKeys is the number of keys of the key-lanes variant: record i has key
// k<i mod laneKeys>, so each key has many records, all on one partition when
// laneKeys is a multiple of the partition count.
const laneKeys = 1200

// runChaos runs one variant. With lanes, the members use the ByKey ordering
// over records sharing laneKeys keys, and order is judged per key.
func runChaos(t *testing.T, bin, proto string, dedupe, lanes bool) {
	wallStart := time.Now()
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	n, parts, slots := *flagRecords, *flagPartitions, *flagMembers

	brokers, kind := chaosBrokers(t)
	brokerRestart := os.Getenv("KBATCH_CHAOS_BROKER_RESTART") == "1"
	if brokerRestart && kafkatest.Kind() != "env" {
		t.Logf("KBATCH_CHAOS_BROKER_RESTART=1 ignored: restarting needs the scripts/kafka broker named by KAFKA_BROKERS; this run's broker is %s", kind)
		brokerRestart = false
	}
	t.Logf("seed %d (KBATCH_CHAOS_SEED=%d repeats the schedule), broker %s %v", seed, seed, kind, brokers)

	ctx, cancel := context.WithTimeout(context.Background(), 2**flagStream+tailLimit+5*time.Minute)
	defer cancel()

	adm := kafkatest.Admin(t, brokers)
	topic, group := kafkatest.Name(t, "chaos"), kafkatest.Name(t, "chaos")
	createTopic(ctx, t, adm, topic, parts)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_, _ = adm.DeleteGroups(cctx, group)
		_, _ = adm.DeleteTopics(cctx, topic)
	})

	pt := time.Now()
	pad := strings.Repeat("x", 40)
	keys := n
	if lanes {
		keys = laneKeys
		if err := produceLanes(ctx, brokers, topic, n, pad); err != nil {
			t.Fatalf("producing: %v", err)
		}
	} else if err := kafkatest.ProduceN(ctx, brokers, topic, n, parts, func(i int) []byte {
		return fmt.Appendf(nil, "chaos %d %s", i, pad)
	}); err != nil {
		t.Fatalf("producing: %v", err)
	}
	end, err := endOffsets(ctx, adm, topic, parts)
	if err != nil {
		t.Fatal(err)
	}
	if sum(end) != int64(n) {
		t.Fatalf("the topic holds %d records after producing %d: %v", sum(end), n, end)
	}
	t.Logf("produced %d records to %d partitions in %s", n, parts, time.Since(pt).Round(time.Millisecond))

	// Pace the handlers so that the stream lasts about -chaos.stream: the
	// kills then land while there is work in flight.
	rate := float64(n) / (float64(slots) * flagStream.Seconds())
	dir := t.TempDir()
	args := []string{
		"-brokers", strings.Join(brokers, ","), "-group", group, "-topic", topic,
		"-protocol", proto, "-rate", strconv.FormatFloat(rate, 'f', 1, 64),
	}
	if dedupe {
		args = append(args, "-dedupe", "-batch", strconv.Itoa(dedupeBatch))
	}
	if lanes {
		args = append(args, "-ordering", "key", "-concurrency", "8")
	}
	g := newGroup(t, bin, dir, slots, args)
	var problems []string
	onCrash := func(p *proc) {
		problems = append(problems, fmt.Sprintf("%s exited on its own (%v); log tail:\n%s", p.name, p.exitErr, tail(p.log, 30)))
		if _, err := g.start(p.slot); err != nil {
			problems = append(problems, err.Error())
		}
	}
	for i := range slots {
		if _, err := g.start(i); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	since := func() string { return time.Since(t0).Round(100 * time.Millisecond).String() }

	// On the embedded broker, a classic member is killed, or stopped
	// gracefully, only while it owns partitions and has no JoinGroup in
	// flight: kfake may keep a member that goes away while its join waits
	// (its first, the one after it lost its partitions, or a cooperative
	// rejoin while it keeps them) for ever, and then stalls the group (see
	// TestEmbeddedBrokerRestartsTheRebalanceDeadlineAtEveryJoin). A
	// graceful stop there does not help: kfake answers no LeaveGroup while
	// the join waits, and the member closes after its leave bound without
	// having left. A real broker gets every kill and stop, at any point of
	// a member's life.
	owningOnly := kind == "kfake" && proto == "classic"
	if owningOnly {
		t.Logf("embedded broker: only members that own partitions and are not joining are killed or stopped (kfake stalls a group around a member gone while its join waits)")
	}
	var kills, leaves, restarts int
	for _, ev := range planEvents(rng, *flagKills, brokerRestart, *flagStream) {
		if err := g.pause(ctx, time.Until(t0.Add(ev.at)), onCrash); err != nil {
			t.Fatalf("chaos schedule: %v", err)
		}
		switch ev.kind {
		case evKill:
			p := pick(rng, killable(ctx, g, owningOnly, onCrash))
			if p == nil {
				t.Logf("%s: no live member to kill", since())
				continue
			}
			if err := g.kill(p); err != nil {
				t.Fatal(err)
			}
			kills++
			t.Logf("%s: SIGKILL %s (up %s)", since(), p.name, time.Since(p.started).Round(time.Second))
			if err := g.pause(ctx, time.Duration(rng.Int64N(int64(2*time.Second))), onCrash); err != nil {
				t.Fatal(err)
			}
			np, err := g.start(p.slot)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: started %s", since(), np.name)
		case evLeave:
			p := pick(rng, killable(ctx, g, owningOnly, onCrash))
			if p == nil {
				t.Logf("%s: no live member to stop", since())
				continue
			}
			lt := time.Now()
			if err := g.term(p, leaveLimit); err != nil {
				problems = append(problems, "graceful leave: "+err.Error())
			}
			leaves++
			t.Logf("%s: %s left gracefully (SIGTERM -> Close) in %s", since(), p.name, time.Since(lt).Round(time.Millisecond))
			if err := g.pause(ctx, 2*time.Second, onCrash); err != nil {
				t.Fatal(err)
			}
			np, err := g.start(p.slot)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: started %s", since(), np.name)
		case evBrokerRestart:
			rt := time.Now()
			out, err := kafkaSh(ctx, "restart")
			if err != nil {
				t.Fatalf("kafka.sh restart: %v\n%s", err, out)
			}
			restarts++
			t.Logf("%s: broker restarted (kafka.sh restart) in %s", since(), time.Since(rt).Round(time.Millisecond))
		}
	}
	t.Logf("%s: chaos over (%d kills, %d graceful leaves, %d broker restarts); waiting for the group to commit the end offsets", since(), kills, leaves, restarts)

	caughtUp := false
	var committed []int64
	deadline := time.Now().Add(*flagStream + tailLimit)
	lastLog := time.Now()
	for {
		committed, err = committedOffsets(ctx, adm, group, topic, parts)
		if err == nil && slices.Equal(committed, end) {
			caughtUp = true
			break
		}
		if time.Now().After(deadline) {
			problems = append(problems, fmt.Sprintf("the committed offsets did not reach the end offsets within %s of the chaos: committed %v, end %v (last error %v)",
				*flagStream+tailLimit, committed, end, err))
			break
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			t.Logf("%s: committed %d of %d; live %s", since(), sum(committed), n, names(g.liveProcs()))
		}
		if err := g.pause(ctx, 500*time.Millisecond, onCrash); err != nil {
			t.Fatal(err)
		}
	}
	if caughtUp {
		t.Logf("%s: committed offsets equal the end offsets", since())
	} else {
		// The group is stuck: keep the goroutines of this process (the
		// embedded broker runs in it) and of every live member (SIGQUIT
		// prints them to its log) for whoever reads the kept logs.
		dumpStacks(t, g, filepath.Join(dir, "driver.goroutines"))
	}

	rebalances, rebalanceSource := int64(-1), "generation"
	if proto == "consumer" {
		rebalanceSource = "group_epoch"
		dctx, dcancel := context.WithTimeout(ctx, 15*time.Second)
		if d, err := adm.DescribeConsumerGroups(dctx, group); err == nil && d[group].Err == nil {
			rebalances = int64(d[group].Epoch)
		} else {
			t.Logf("describing the group: %v %v", err, d[group].Err)
		}
		dcancel()
	}

	// Everyone leaves gracefully, at once.
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, p := range g.liveProcs() {
		wg.Go(func() {
			if err := g.term(p, leaveLimit); err != nil {
				mu.Lock()
				problems = append(problems, "final stop: "+err.Error())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, p := range g.crashed() {
		if !slices.ContainsFunc(problems, func(s string) bool { return strings.HasPrefix(s, p.name+" ") }) {
			problems = append(problems, fmt.Sprintf("%s exited on its own (%v)", p.name, p.exitErr))
		}
	}

	final, err := committedOffsets(ctx, adm, group, topic, parts)
	committedOK := err == nil && slices.Equal(final, end)
	if !committedOK {
		problems = append(problems, fmt.Sprintf("after every member left, committed %v (err %v), end %v", final, err, end))
	}

	a := newAudit(end, keys)
	a.ByKey = lanes
	for _, p := range g.all {
		f, err := os.Open(p.ledger)
		if os.IsNotExist(err) {
			continue // killed before it opened its ledger
		}
		if err != nil {
			t.Fatal(err)
		}
		err = a.addFile(p.name, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	lostOffsets, lostKeys := a.Lost()
	if proto == "classic" {
		rebalances = int64(a.MaxGeneration)
	}
	var assigns, partsLost int64
	for _, st := range g.memberStats() {
		assigns += st.Rebalances
		partsLost += st.PartitionsLost
	}

	t.Logf("CHAOS-SUMMARY protocol=%s dedupe=%t key_lanes=%t broker=%s records=%d partitions=%d members=%d incarnations=%d kills=%d graceful_leaves=%d broker_restarts=%d crashes=%d "+
		"rebalances=%d(%s) member_assigns=%d partitions_lost=%d handled=%d duplicates=%d lost=%d lost_keys=%d order_violations=%d ownership_runs=%d "+
		"key_mismatches=%d phantoms=%d bad_lines=%d cut_tails=%d committed_eq_end=%t wall=%s seed=%d",
		proto, dedupe, lanes, kind, n, parts, slots, len(g.all), kills, leaves, restarts, len(g.crashed()),
		rebalances, rebalanceSource, assigns, partsLost, a.Handled, a.Duplicates, lostOffsets, lostKeys, a.OrderViolations, a.Runs,
		a.KeyMismatches, a.Phantoms, a.BadLines, a.CutTails, committedOK, time.Since(wallStart).Round(time.Second), seed)

	if lostOffsets > 0 || lostKeys > 0 || a.OrderViolations > 0 || a.KeyMismatches > 0 || a.Phantoms > 0 || a.BadLines > 0 {
		t.Errorf("ledgers: lost %d (keys %d), order violations %d, key mismatches %d, phantoms %d, bad lines %d; first problems:\n  %s\n(ledgers and member logs in %s)",
			lostOffsets, lostKeys, a.OrderViolations, a.KeyMismatches, a.Phantoms, a.BadLines, strings.Join(a.Examples, "\n  "), dir)
	}
	// With the dedupe store a record done is never handed out again, even
	// when its offset was not committed: a kill, or a partition lost on a
	// broker restart, re-delivers at most the batch in flight on each
	// partition (handled, not yet recorded done). Without the store a kill
	// re-delivers everything since the last commit.
	if dedupe {
		bound := int64((kills + restarts + 1) * parts * dedupeBatch)
		if a.Duplicates > bound {
			t.Errorf("with the dedupe store: %d duplicates, more than the %d that %d kills and %d broker restarts can leave in flight (%d partitions x batches of %d)",
				a.Duplicates, bound, kills, restarts, parts, dedupeBatch)
		}
	}
	for _, p := range problems {
		t.Error(p)
	}
	keepLogs(t, dir)
}

// dumpStacks writes this process's goroutines to path and makes every live
// member print its goroutines to its log and exit (SIGQUIT).
func dumpStacks(t *testing.T, g *group, path string) {
	if f, err := os.Create(path); err == nil {
		_ = pprof.Lookup("goroutine").WriteTo(f, 2)
		f.Close()
	}
	for _, p := range g.liveProcs() {
		if err := g.quit(p); err != nil {
			t.Log(err)
		}
	}
	t.Logf("goroutines of the driver in %s, of the members at the end of their logs", path)
}

// chaosBrokers returns a broker the member processes can reach. On kfake it
// starts a cluster of its own in this process (KIP-848 sessions of 6 s, like
// the classic members'), so "broker restart" is for the real broker only.
func chaosBrokers(t *testing.T) ([]string, string) {
	switch kafkatest.Kind() {
	case "env":
		return kafkatest.Brokers(t), "kafka(KAFKA_BROKERS)"
	case "testcontainers":
		return kafkatest.Brokers(t), "kafka(testcontainers)"
	}
	c, err := kafkatest.NewEmbedded(kfake.BrokerConfigs(map[string]string{
		"group.consumer.session.timeout.ms":    "6000",
		"group.consumer.heartbeat.interval.ms": "500",
	}))
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs(), "kfake"
}

func createTopic(ctx context.Context, t *testing.T, adm *kadm.Client, topic string, parts int) {
	t.Helper()
	resp, err := adm.CreateTopic(ctx, int32(parts), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("creating topic %s: %v", topic, err)
	}
}

func endOffsets(ctx context.Context, adm *kadm.Client, topic string, parts int) ([]int64, error) {
	resp, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing end offsets: %w", err)
	}
	out := make([]int64, parts)
	var perr error
	resp.Each(func(o kadm.ListedOffset) {
		switch {
		case o.Err != nil:
			perr = o.Err
		case int(o.Partition) < parts:
			out[o.Partition] = o.Offset
		}
	})
	return out, perr
}

// committedOffsets returns the group's committed offset per partition, -1
// where none.
func committedOffsets(ctx context.Context, adm *kadm.Client, group, topic string, parts int) ([]int64, error) {
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := adm.FetchOffsetsForTopics(fctx, group, topic)
	if err != nil {
		return nil, err
	}
	out := make([]int64, parts)
	for i := range out {
		out[i] = -1
	}
	var perr error
	resp.Each(func(o kadm.OffsetResponse) {
		switch {
		case o.Err != nil:
			perr = o.Err
		case int(o.Partition) < parts:
			out[o.Partition] = o.At
		}
	})
	return out, perr
}

// kafkaSh runs scripts/kafka/kafka.sh with args.
func kafkaSh(ctx context.Context, args ...string) ([]byte, error) {
	script, err := filepath.Abs(filepath.Join("..", "scripts", "kafka", "kafka.sh"))
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return exec.CommandContext(cctx, "bash", append([]string{script}, args...)...).CombinedOutput()
}

// killable returns the live members a kill may pick. With owningOnly, it is
// those whose stats say they own partitions; it waits up to 30 s for one.
func killable(ctx context.Context, g *group, owningOnly bool, onCrash func(*proc)) []*proc {
	if !owningOnly {
		return g.liveProcs()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ps []*proc
		for _, p := range g.liveProcs() {
			if g.owns(p) {
				ps = append(ps, p)
			}
		}
		if len(ps) > 0 || time.Now().After(deadline) {
			return ps
		}
		if g.pause(ctx, 250*time.Millisecond, onCrash) != nil {
			return nil
		}
	}
}

// pick returns a random live member, preferring those up for 5 s or more
// (they have joined and own partitions).
func pick(rng *rand.Rand, ps []*proc) *proc {
	var settled []*proc
	for _, p := range ps {
		if time.Since(p.started) >= 5*time.Second {
			settled = append(settled, p)
		}
	}
	if len(settled) > 0 {
		ps = settled
	}
	if len(ps) == 0 {
		return nil
	}
	return ps[rng.IntN(len(ps))]
}

func names(ps []*proc) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.name)
	}
	return strings.Join(s, ",")
}

func sum(xs []int64) int64 {
	var s int64
	for _, x := range xs {
		s += max(x, 0)
	}
	return s
}

// keepLogs copies the run's ledgers and member logs out of the test's
// temporary directory (removed when the test ends) when
// KBATCH_CHAOS_KEEP=<dir> is set, or KBATCH_CHAOS_KEEP_FAILED=<dir> and the
// run failed.
func keepLogs(t *testing.T, dir string) {
	keep := os.Getenv("KBATCH_CHAOS_KEEP")
	if keep == "" && t.Failed() {
		keep = os.Getenv("KBATCH_CHAOS_KEEP_FAILED") // CI: only what failed
	}
	if keep == "" {
		if t.Failed() {
			t.Logf("set KBATCH_CHAOS_KEEP=<dir> to keep the ledgers and member logs")
		}
		return
	}
	if err := os.MkdirAll(keep, 0o755); err != nil {
		t.Logf("keeping logs: %v", err)
		return
	}
	dst := filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "-")+"-"+time.Now().Format("150405"))
	if out, err := exec.Command("cp", "-r", dir, dst).CombinedOutput(); err != nil {
		t.Logf("keeping logs: %v %s", err, out)
		return
	}
	t.Logf("ledgers and member logs kept in %s", dst)
}

func envString(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func envInt(key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	i, err := strconv.Atoi(strings.ReplaceAll(v, "_", ""))
	if err != nil {
		envErrs = append(envErrs, fmt.Sprintf("%s=%q: %v", key, v, err))
		return def
	}
	return i
}

func envDuration(key string, def time.Duration) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		envErrs = append(envErrs, fmt.Sprintf("%s=%q: %v", key, v, err))
		return def
	}
	return d
}
