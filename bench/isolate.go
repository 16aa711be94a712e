package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// scenarioChildEnv, when set in the environment, makes this program run one
// scenario instead of the suite: the job comes as JSON on stdin, progress
// and the result go to stdout. The suite starts itself again this way for
// every scenario run (-isolate), so that the peak RSS it reports is that of
// one consumer process alone: no other scenario's heap left behind, no
// producer, no broker, no harness of other runs.
const scenarioChildEnv = "KBATCH_BENCH_SCENARIO_CHILD"

// Lines the scenario process writes on stdout.
const (
	childGotPrefix    = "got "    // records received so far
	childResultPrefix = "result " // the RunResult as JSON, last
)

// childProgressPeriod is how often the scenario process reports progress.
const childProgressPeriod = 200 * time.Millisecond

// scenarioJob is what the suite sends the scenario process.
type scenarioJob struct {
	Key        string         `json:"key"`
	Run        int            `json:"run"`
	Order      int            `json:"order"`
	Brokers    []string       `json:"brokers"`
	Topic      string         `json:"topic"`
	Records    int64          `json:"records"`
	Spans      map[int32]Span `json:"spans"`
	Subset     map[int32]Span `json:"subset"`
	Work       time.Duration  `json:"work"`
	BatchRecs  int            `json:"batch_records"`
	RecordWait time.Duration  `json:"record_wait"`
	Stall      time.Duration  `json:"stall"`
	CloseMax   time.Duration  `json:"close_max"`
}

// runIsolated runs one scenario in a child process and reads back its
// result; the peak RSS is the child's whole-life maximum (its VmHWM). Not
// the parent's getrusage of the child: on Linux that maxrss includes the
// parent's own peak, which exec records from the memory it shared with
// the parent until then (Go starts children with vfork).
func (h *harness) runIsolated(ctx context.Context, sc Scenario, run, order int, label string) RunResult {
	spans := h.data.Spans
	if sc.Subset {
		spans = h.subset
	}
	want := spansLen(spans)
	var got atomic.Int64
	show := h.progress.track(label, want, got.Load, false)
	job := scenarioJob{
		Key: sc.Key, Run: run, Order: order, Brokers: h.brokers,
		Topic: h.data.Topic, Records: h.data.Records, Spans: h.data.Spans, Subset: h.subset,
		Work: h.work, BatchRecs: h.batchRecs, RecordWait: h.recordWait, Stall: h.stall, CloseMax: h.closeMax,
	}
	res, err := h.childRun(ctx, job, &got)
	if err != nil {
		res = RunResult{Run: run, Order: order, Commits: -1, OwnCommits: -1, Fetches: -1, AllocsPerRecord: -1, Isolated: true}
		res.Check = CheckReport{Want: want, Got: got.Load()}
		res.Check.Missing = fmt.Sprintf("%d of %d records missing (by the scenario process's last report)", want-res.Check.Got, want)
		res.Error = joinNonEmpty(res.Check.Missing, err.Error())
		res.Records = res.Check.Got
	}
	show.done(res)
	return res
}

// childRun starts the scenario process, follows its progress into got, and
// returns its result. When ctx ends, the process is interrupted (it closes
// its client as on a stall), and killed if it does not exit in time.
func (h *harness) childRun(ctx context.Context, job scenarioJob, got *atomic.Int64) (RunResult, error) {
	exe := h.childExe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return RunResult{}, fmt.Errorf("finding own executable for the scenario process: %w", err)
		}
	}
	in, err := json.Marshal(job)
	if err != nil {
		return RunResult{}, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), scenarioChildEnv+"=1")
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return RunResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return RunResult{}, fmt.Errorf("starting the scenario process: %w", err)
	}
	exited := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		select {
		case <-exited:
			return
		case <-ctx.Done():
		}
		_ = cmd.Process.Signal(os.Interrupt)
		t := time.NewTimer(h.closeMax + 10*time.Second)
		defer t.Stop()
		select {
		case <-exited:
		case <-t.C:
			_ = cmd.Process.Kill()
		}
	}()

	result, readErr := readChild(stdout, got)
	_, _ = io.Copy(io.Discard, stdout)
	waitErr := cmd.Wait()
	close(exited)
	watch.Wait()

	if result == nil {
		return RunResult{}, fmt.Errorf("scenario process gave no result: %w", errors.Join(readErr, waitErr))
	}
	result.Isolated = true
	if waitErr != nil {
		result.OK = false
		result.Error = joinNonEmpty(result.Error, "scenario process: "+waitErr.Error())
	}
	return *result, nil
}

// readChild follows the scenario process's lines until its result.
func readChild(r io.Reader, got *atomic.Int64) (*RunResult, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, childGotPrefix):
			if n, err := strconv.ParseInt(strings.TrimPrefix(line, childGotPrefix), 10, 64); err == nil {
				got.Store(n)
			}
		case strings.HasPrefix(line, childResultPrefix):
			var res RunResult
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, childResultPrefix)), &res); err != nil {
				return nil, fmt.Errorf("reading the scenario's result: %w", err)
			}
			got.Store(res.Check.Got)
			return &res, nil
		}
	}
	return nil, sc.Err()
}

// serveScenarioChild is the scenario process's main: it runs the job read
// from stdin and writes its progress and result to stdout.
func serveScenarioChild() int {
	var job scenarioJob
	if err := json.NewDecoder(os.Stdin).Decode(&job); err != nil {
		fmt.Fprintf(os.Stderr, "bench scenario: reading the job: %v\n", err)
		return 2
	}
	sc, ok := scenarioByKey(job.Key)
	if !ok {
		fmt.Fprintf(os.Stderr, "bench scenario: unknown scenario %q\n", job.Key)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var mu sync.Mutex // one line at a time
	emit := func(line string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(os.Stdout, line)
	}
	done := make(chan struct{})
	var reporter sync.WaitGroup
	h := &harness{
		brokers:    job.Brokers,
		data:       &dataset{Topic: job.Topic, Spans: job.Spans, Records: job.Records},
		subset:     job.Subset,
		work:       job.Work,
		batchRecs:  job.BatchRecs,
		recordWait: job.RecordWait,
		stall:      job.Stall,
		closeMax:   job.CloseMax,
		progress:   newProgress(io.Discard, true),
		ownProcess: true,
		started: func(env *Env) {
			reporter.Add(1)
			go func() {
				defer reporter.Done()
				t := time.NewTicker(childProgressPeriod)
				defer t.Stop()
				for {
					select {
					case <-done:
						return
					case <-t.C:
						emit(childGotPrefix + strconv.FormatInt(env.Check.Got(), 10))
					}
				}
			}()
		},
	}
	res := h.runOne(ctx, sc, job.Run, job.Order, job.Key)
	close(done)
	reporter.Wait()
	out, err := json.Marshal(res)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench scenario: writing the result: %v\n", err)
		return 1
	}
	emit(childResultPrefix + string(out))
	return 0
}

// spansLen is the number of offsets in the spans.
func spansLen(spans map[int32]Span) int64 {
	var n int64
	for _, s := range spans {
		n += s.Len()
	}
	return n
}
