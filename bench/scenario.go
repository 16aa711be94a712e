package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/pprof"
	"time"
)

// Scenario is one way of consuming the pre-produced topic. The suite runs
// every scenario of the table once per run, each with a fresh group, and
// checks that it received every record.
type Scenario struct {
	// Key names the scenario in flags, JSON and profile labels.
	Key string
	// Name is shown in the table.
	Name string
	// Subset scenarios are too slow to read the whole topic: they read the
	// first -sync-records records (spread over the partitions) and their
	// wall time is scaled up to the full count.
	Subset bool
	// External scenarios run in another process and report their own rate:
	// no allocation, heap or CPU figures for them.
	External bool
	// Run consumes until env.Check is complete (env.Check.Done() is
	// closed) or ctx ends, then closes its client and returns. It returns an
	// error when the client failed.
	Run func(ctx context.Context, env *Env) (Outcome, error)
}

// Env is what a scenario's Run gets.
type Env struct {
	Brokers []string
	Topic   string
	Group   string   // fresh for every scenario and run
	Check   *Checker // mark every record received here
	Wire    *Wire    // dial through it, so its requests are counted
	Work    time.Duration
	// BatchRecs is Batch.MaxRecords of the kbatch scenarios (-batch-records;
	// 0: kbatch's default).
	BatchRecs int
	// RecordWait is kbatch-bounded's handler wait per record of a batch.
	RecordWait time.Duration
	Stall      time.Duration // the harness gives up after this long without progress
}

// Outcome is what a scenario reports beyond what the harness measures.
type Outcome struct {
	// OwnCommits is the number of commits the client's own counters report;
	// -1 when it has none.
	OwnCommits int64
	// Client holds the client's own counters worth keeping (JSON only).
	Client map[string]int64
	// External is set by External scenarios.
	External *ExternalResult
}

// ExternalResult is an external tool's own account of its run.
type ExternalResult struct {
	Records       int64
	Bytes         int64
	RecordsPerSec float64
	MBPerSec      float64 // MiB (2^20 bytes) per second
	Elapsed       time.Duration
	Raw           string // the tool's output, for the JSON
}

// boundedScenario is the memory check's consumer (memcheck.go): not in the
// table, since its slow handler makes it a measure of memory, not of speed.
func boundedScenario() Scenario {
	return Scenario{Key: boundedKey, Name: "kbatch, bounded buffer, slow handler", Run: runKbatchBounded}
}

// scenarioByKey finds a scenario of this program (the table's or the
// memory check's) by its key.
func scenarioByKey(key string) (Scenario, bool) {
	for _, s := range append(scenarios(), boundedScenario()) {
		if s.Key == key {
			return s, true
		}
	}
	return Scenario{}, false
}

// rawKey is the scenario every ratio is taken against.
const rawKey = "franz-raw"

// RunResult is one scenario's measures in one run.
type RunResult struct {
	Run   int    `json:"run"`
	Order int    `json:"order"` // position within the run
	Group string `json:"group"`

	OK    bool        `json:"ok"`
	Error string      `json:"error,omitempty"`
	Check CheckReport `json:"check"`

	Records       int64   `json:"records"` // records the rate is taken over
	Bytes         int64   `json:"bytes"`
	ElapsedSec    float64 `json:"elapsed_sec"` // first Fetch request (or first record) to last record
	RecordsPerSec float64 `json:"records_per_sec"`
	MBPerSec      float64 `json:"mib_per_sec"`
	Ratio         float64 `json:"ratio_to_raw"` // 0 when the raw loop of this run failed

	Commits    int64 `json:"commits"`     // OffsetCommit requests written, counted on the wire; -1 unknown
	OwnCommits int64 `json:"own_commits"` // the client's own count; -1 when it has none
	Fetches    int64 `json:"fetches"`     // Fetch requests written; -1 unknown

	AllocsPerRecord float64 `json:"allocs_per_record"` // -1 unknown
	BytesPerRecord  float64 `json:"alloc_bytes_per_record"`
	CPUPerRecordNs  float64 `json:"cpu_ns_per_record"`
	PeakHeapInuse   uint64  `json:"peak_heap_inuse_bytes"`
	PeakRSS         uint64  `json:"peak_rss_bytes"`
	GCs             uint32  `json:"gcs"`
	// Isolated: the scenario ran in a process of its own, and PeakRSS is
	// that process's whole-life peak (VmHWM).
	Isolated bool `json:"isolated"`

	FirstFetchSec  float64 `json:"first_fetch_sec"`  // start of the client to its first Fetch request (group join); 0 unknown
	FirstRecordSec float64 `json:"first_record_sec"` // start of the client to its first record (group join, first fetch)
	WallSec        float64 `json:"wall_sec"`         // start of the client to its close
	ScaledWallSec  float64 `json:"scaled_wall_sec"`  // Subset scenarios: wall time for the full count

	ClientStats map[string]int64 `json:"client_stats,omitempty"` // the client's own counters (kbatch: Stats)
	ToolOutput  string           `json:"tool_output,omitempty"`  // External scenarios: the summary they printed
}

// harness runs scenarios.
type harness struct {
	brokers    []string
	data       *dataset
	subset     map[int32]Span // what Subset scenarios read
	work       time.Duration
	batchRecs  int
	recordWait time.Duration
	stall      time.Duration
	closeMax   time.Duration // how long a scenario may take to stop
	progress   *progress
	isolate    bool   // run each scenario in a child process (isolate.go)
	childExe   string // the program that child process runs; empty: this one
	ownProcess bool   // this is a scenario process: the process's peak RSS is the scenario's

	// started, when set, is called with a scenario's Env before it runs
	// (the scenario process reports its progress through it).
	started func(*Env)
}

// run runs one scenario once: in a process of its own when the harness
// isolates and the scenario is this program's, else in this process.
func (h *harness) run(ctx context.Context, sc Scenario, run, order int, label string) RunResult {
	if h.isolate && !sc.External {
		return h.runIsolated(ctx, sc, run, order, label)
	}
	return h.runOne(ctx, sc, run, order, label)
}

// runOne runs one scenario once and measures it.
func (h *harness) runOne(ctx context.Context, sc Scenario, run, order int, label string) RunResult {
	spans := h.data.Spans
	if sc.Subset {
		spans = h.subset
	}
	env := &Env{
		Brokers:    h.brokers,
		Topic:      h.data.Topic,
		Group:      uniqueName("kbatch-bench-" + sc.Key),
		Check:      NewChecker(spans),
		Wire:       newWire(),
		Work:       h.work,
		BatchRecs:  h.batchRecs,
		RecordWait: h.recordWait,
		Stall:      h.stall,
	}
	if h.started != nil {
		h.started(env)
	}
	res := RunResult{Run: run, Order: order, Group: env.Group, Commits: -1, OwnCommits: -1, Fetches: -1, AllocsPerRecord: -1}
	show := h.progress.track(label, env.Check.Want(), env.Check.Got, sc.External)

	m := startMeter(h.ownProcess)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type ret struct {
		out Outcome
		err error
	}
	returned := make(chan ret, 1)
	go pprof.Do(ctx, pprof.Labels("scenario", sc.Key), func(ctx context.Context) {
		out, err := sc.Run(ctx, env)
		returned <- ret{out, err}
	})

	var (
		r       ret
		stopErr error
	)
	tick := time.NewTicker(250 * time.Millisecond)
	last, lastAt := int64(-1), time.Now()
	var stopAt time.Time // when we cancelled it or it completed
wait:
	for {
		select {
		case r = <-returned:
			break wait
		case <-tick.C:
		}
		now := time.Now()
		if got := env.Check.Got(); got != last {
			last, lastAt = got, now
		}
		switch {
		case stopAt.IsZero() && env.Check.Complete():
			stopAt = now
		case stopAt.IsZero() && ctx.Err() != nil:
			stopAt = now
			stopErr = ctx.Err()
		case stopAt.IsZero() && !sc.External && now.Sub(lastAt) > h.stall:
			stopErr = fmt.Errorf("no progress for %s", h.stall)
			cancel()
			stopAt = now
		case !stopAt.IsZero() && now.Sub(stopAt) > h.closeMax:
			stopErr = errors.Join(stopErr, fmt.Errorf("client did not stop within %s; abandoned", h.closeMax))
			cancel()
			break wait
		}
	}
	tick.Stop()
	u := m.finish()

	res.Check = env.Check.Report()
	res.WallSec = u.Wall.Seconds()
	switch {
	case r.err != nil:
		res.Error = r.err.Error()
	case stopErr != nil:
		res.Error = stopErr.Error()
	}
	if sc.External {
		res = h.external(res, r.out.External, env.Check.Want())
	} else {
		res.OK = res.Check.OK() && res.Error == ""
		if !res.Check.OK() {
			res.Error = joinNonEmpty(res.Check.Missing, res.Error)
		}
		res.Records = res.Check.Got
		res.Bytes = env.Check.Bytes()
		if first := env.Check.firstNano.Load(); first > 0 {
			res.FirstRecordSec = time.Unix(0, first).Sub(m.start).Seconds()
		}
		// The clock starts at the first Fetch request, not at the first
		// record: a client whose first poll waits for one large fetch
		// (the raw loop reads a third of a 1024-partition backlog in its
		// first) would otherwise have that fetch left out of its time
		// but its records counted.
		ff := env.Wire.FirstFetch()
		if !ff.IsZero() {
			res.FirstFetchSec = ff.Sub(m.start).Seconds()
		}
		el := env.Check.ElapsedSince(ff)
		res.ElapsedSec = el.Seconds()
		if el > 0 {
			res.RecordsPerSec = float64(res.Records) / el.Seconds()
			res.MBPerSec = float64(res.Bytes) / (1 << 20) / el.Seconds()
		}
		res.Commits = env.Wire.Commits()
		res.Fetches = env.Wire.Fetches()
		res.OwnCommits = r.out.OwnCommits
		res.ClientStats = r.out.Client
		if res.Records > 0 {
			res.AllocsPerRecord = float64(u.Mallocs) / float64(res.Records)
			res.BytesPerRecord = float64(u.AllocBytes) / float64(res.Records)
			res.CPUPerRecordNs = float64(u.CPU.Nanoseconds()) / float64(res.Records)
		}
		res.PeakHeapInuse = u.PeakHeapInuse
		res.PeakRSS = u.PeakRSS
		res.GCs = u.GCs
	}
	res.ScaledWallSec = res.WallSec
	if sc.Subset && res.Records > 0 && res.ElapsedSec > 0 {
		scale := float64(h.data.Records) / float64(res.Records)
		res.ScaledWallSec = res.WallSec - res.ElapsedSec + res.ElapsedSec*scale
	}
	show.done(res)
	return res
}

// external fills in an external scenario's result from its own report.
func (h *harness) external(res RunResult, ext *ExternalResult, want int64) RunResult {
	if ext == nil {
		if res.Error == "" {
			res.Error = "no result"
		}
		return res
	}
	res.Records = ext.Records
	res.Bytes = ext.Bytes
	res.RecordsPerSec = ext.RecordsPerSec
	res.MBPerSec = ext.MBPerSec
	res.ElapsedSec = ext.Elapsed.Seconds()
	res.ToolOutput = ext.Raw
	res.Check = CheckReport{Want: want, Got: min(ext.Records, want), Delivered: ext.Records}
	if ext.Records < want {
		res.Check.Missing = fmt.Sprintf("%d of %d records missing (by the tool's own count)", want-ext.Records, want)
		res.Error = joinNonEmpty(res.Check.Missing, res.Error)
	}
	res.OK = res.Error == ""
	return res
}

func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// subsetSpans takes about n records from the start of the spans, spread
// evenly over the partitions.
func subsetSpans(spans map[int32]Span, n int64) map[int32]Span {
	if len(spans) == 0 {
		return spans
	}
	per := (n + int64(len(spans)) - 1) / int64(len(spans))
	out := make(map[int32]Span, len(spans))
	for p, s := range spans {
		out[p] = Span{From: s.From, To: s.From + min(per, s.Len())}
	}
	return out
}

// dataset is what the pre-produced topic holds.
type dataset struct {
	Topic   string         `json:"topic"`
	Spans   map[int32]Span `json:"-"`
	Records int64          `json:"records"`
	Bytes   int64          `json:"bytes"`   // key+value bytes of all records; 0 if the topic was reused
	Created bool           `json:"created"` // false: an existing topic was reused
}

// uniqueName returns prefix-<8 hex digits>.
func uniqueName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}
