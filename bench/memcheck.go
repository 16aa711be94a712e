//go:build !memchild

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// The memory check is an acceptance test of DESIGN.md invariant 6: a kbatch
// consumer with MaxBufferedRecords 5000 and MaxBufferedBytes 8 MiB, a slow
// handler, and a backlog of compressible 200 B records produced with
// franz-go's default compression (snappy), must keep its process's peak RSS
// within MaxBufferedBytes plus a constant, whatever the backlog.

const (
	// memValueBytes is the size of the check's values.
	memValueBytes = 200
	// memCompression is what franz-go's producer uses by default.
	memCompression = "snappy"
	// defaultMemSlack is the constant allowed over MaxBufferedBytes: what
	// a consumer process holds besides the records kbatch counts. The
	// process with an almost empty buffer (the Go runtime, the binary's
	// pages, the kgo client with one connection per broker and its
	// metadata, kbatch's goroutines, the checker): 14.7 MiB, the peak RSS
	// of the check's consumer program (memchild.go) with a backlog of
	// 1,000 records on kfake, linux/amd64. The garbage collector's
	// headroom: GOGC=100 lets the heap grow to twice what is live, up to
	// another MaxBufferedBytes, 8 MiB. And 9.3 MiB for the client's
	// fetched batches and margin: a record held keeps its whole
	// decompressed record batch alive, and the client decodes a batch at
	// once, whatever its fetch size.
	defaultMemSlack = 32 << 20
)

// MemReport is the memory check's outcome.
type MemReport struct {
	Command            string     `json:"command"`
	Started            time.Time  `json:"started"`
	Finished           time.Time  `json:"finished"`
	Go                 string     `json:"go"`
	OS                 string     `json:"os"`
	CPU                string     `json:"cpu"`
	NumCPU             int        `json:"num_cpu"`
	Broker             string     `json:"broker"`
	Partitions         int        `json:"partitions"`
	ValueBytes         int        `json:"value_bytes"`
	Compression        string     `json:"compression"`
	MaxBufferedRecords int        `json:"max_buffered_records"`
	MaxBufferedBytes   int64      `json:"max_buffered_bytes"`
	RecordWait         string     `json:"handler_wait_per_record"`
	Slack              int64      `json:"slack_bytes"`
	Limit              int64      `json:"limit_bytes"` // MaxBufferedBytes + Slack
	Runs               int        `json:"runs"`
	Isolated           bool       `json:"isolated"`
	Consumer           string     `json:"consumer_program"` // what the measured process runs
	Points             []MemPoint `json:"points"`
	Met                bool       `json:"met"`    // every run of every backlog stayed within Limit
	Failed             bool       `json:"failed"` // some run missed records or failed
	Notes              []string   `json:"notes,omitempty"`
	Growth             *MemGrowth `json:"growth,omitempty"`
}

// MemPoint is one backlog of the check.
type MemPoint struct {
	Backlog             int64   `json:"backlog"`
	PeakRSSMedian       float64 `json:"peak_rss_median_bytes"`
	PeakRSSMax          float64 `json:"peak_rss_max_bytes"`
	PeakBufferedRecords int64   `json:"peak_buffered_records"` // kbatch's own count, highest over runs
	PeakBufferedBytes   int64   `json:"peak_buffered_bytes"`
	RecordsPerSec       float64 `json:"records_per_sec"`
	OKRuns              int     `json:"ok_runs"`
	Met                 bool    `json:"met"`
	Report              *Report `json:"report"`
}

// MemGrowth compares the largest backlog's peak RSS with the smallest's.
type MemGrowth struct {
	From  string  `json:"from"`
	To    string  `json:"to"`
	Ratio float64 `json:"ratio"`
}

// runMemCheck measures the bounded consumer at each backlog, prints the
// table and writes memcheck.json and memcheck.md to -out.
func runMemCheck(ctx context.Context, o *options, stdout io.Writer) (*MemReport, error) {
	outDir, err := outputDir(o.out)
	if err != nil {
		return nil, err
	}
	backlogs, err := parseCounts(o.memBacklogs)
	if err != nil {
		return nil, fmt.Errorf("-memcheck-backlogs: %w", err)
	}
	mo := *o
	mo.only = boundedKey
	s, err := startSuite(ctx, &mo, []Scenario{boundedScenario()})
	if err != nil {
		return nil, err
	}
	defer s.Close()

	consumerProc := "this program (the whole suite, with every client it compares)"
	if s.isolated() {
		exe, size, err := buildMemChild(ctx, o.memChildTimeout)
		if err != nil {
			s.notes = append(s.notes, "the lean consumer program could not be built, so the scenario processes run this whole program, whose baseline is higher: "+err.Error())
		} else {
			defer os.RemoveAll(filepath.Dir(exe))
			s.childExe = exe
			consumerProc = fmt.Sprintf("this suite built with -tags memchild (kbatch, franz-go and the harness only), %.1f MB", float64(size)/1e6)
		}
	}

	rep := &MemReport{
		Command: commandLine(), Started: time.Now(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		CPU: cpuModel(), NumCPU: runtime.NumCPU(), Broker: s.b.Kind,
		Partitions: o.partitions, ValueBytes: memValueBytes, Compression: memCompression,
		MaxBufferedRecords: boundedMaxRecords, MaxBufferedBytes: boundedMaxBytes,
		RecordWait: o.memRecordWait.String(), Slack: o.memSlack, Limit: boundedMaxBytes + o.memSlack,
		Runs: o.runs, Isolated: s.isolated(), Consumer: consumerProc, Notes: s.notes,
	}
	if !rep.Isolated {
		rep.Notes = append(rep.Notes, "scenarios ran in this process: peak RSS is VmHWM reset per run, and includes the harness")
	}
	for i, n := range backlogs {
		s.prog.note("memory check: backlog %d/%d, %s records", i+1, len(backlogs), groupDigits(n))
		p := point{
			Records: int(n), Partitions: o.partitions, ValueBytes: memValueBytes, Keys: o.keys,
			Compression: memCompression, Compressible: true, RecordWait: o.memRecordWait,
		}
		r, err := s.measure(ctx, p, true)
		if err != nil {
			return nil, fmt.Errorf("memory check at %s records: %w", groupDigits(n), err)
		}
		rep.Points = append(rep.Points, memPointOf(n, r, rep.Limit))
	}
	rep.Finished = time.Now()
	rep.summarize()
	rep.printTable(stdout)

	base := filepath.Join(outDir, "memcheck")
	if err := rep.writeFiles(base); err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "\nwrote %s.json and %s.md\n", base, base)
	return rep, nil
}

// buildMemChild builds the program the check measures: this suite with
// -tags memchild (memchild.go), which links kbatch, franz-go and the
// harness but not the other clients, the embedded broker or the report
// code, so that its peak RSS is that of a consumer process. A user's
// service links what it needs; the whole suite's binary is twice the size
// and its package initialisation and pages added 6.6 MiB to every run's
// peak. The source is found from the working directory upwards (go -C
// bench run . runs there).
func buildMemChild(ctx context.Context, timeout time.Duration) (exe string, size int64, err error) {
	mod, err := findUp(filepath.Join("bench", "go.mod"))
	if err != nil {
		return "", 0, err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", 0, fmt.Errorf("no go tool to build it with: %w", err)
	}
	dir, err := os.MkdirTemp("", "kbatch-memcheck-")
	if err != nil {
		return "", 0, err
	}
	exe = filepath.Join(dir, "kbatch-memcheck-consumer")
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-tags", "memchild", "-o", exe, ".")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", 0, fmt.Errorf("go build -tags memchild in %s: %w: %s", cmd.Dir, err, bytes.TrimSpace(out))
	}
	fi, err := os.Stat(exe)
	if err != nil {
		os.RemoveAll(dir)
		return "", 0, err
	}
	return exe, fi.Size(), nil
}

// memPointOf reads one backlog's report: the peak RSS over its good runs
// and kbatch's own buffer peaks.
func memPointOf(backlog int64, r *Report, limit int64) MemPoint {
	p := MemPoint{Backlog: backlog, Report: r}
	s := r.scenario(boundedKey)
	if s == nil {
		return p
	}
	p.OKRuns = s.OKRuns
	p.PeakRSSMedian = s.Median.PeakRSS
	p.RecordsPerSec = s.Median.RecordsPerSec
	for _, rr := range s.Runs {
		if !rr.OK {
			continue
		}
		p.PeakRSSMax = max(p.PeakRSSMax, float64(rr.PeakRSS))
		p.PeakBufferedRecords = max(p.PeakBufferedRecords, rr.ClientStats["peak_buffered_records"])
		p.PeakBufferedBytes = max(p.PeakBufferedBytes, rr.ClientStats["peak_buffered_bytes"])
	}
	p.Met = p.OKRuns == len(s.Runs) && p.OKRuns > 0 && p.PeakRSSMax > 0 && p.PeakRSSMax <= float64(limit)
	return p
}

// summarize sets the verdicts: met when every backlog is; failed when a
// run missed records.
func (r *MemReport) summarize() {
	r.Met = len(r.Points) > 0
	r.Failed = false
	for _, p := range r.Points {
		r.Met = r.Met && p.Met
		r.Failed = r.Failed || p.Report == nil || p.Report.Failed
	}
	r.Growth = nil
	if n := len(r.Points); n >= 2 && r.Points[0].PeakRSSMedian > 0 {
		a, b := r.Points[0], r.Points[n-1]
		r.Growth = &MemGrowth{From: countLabel(a.Backlog), To: countLabel(b.Backlog), Ratio: b.PeakRSSMedian / a.PeakRSSMedian}
	}
}

// printTable writes the check as markdown to w.
func (r *MemReport) printTable(w io.Writer) {
	fmt.Fprintln(w)
	r.writeMarkdown(w, false)
}

func (r *MemReport) writeMarkdown(w io.Writer, withCommand bool) {
	fmt.Fprintln(w, "## kbatch memory bound: peak RSS of a bounded consumer")
	fmt.Fprintln(w)
	if withCommand {
		fmt.Fprintf(w, "`%s`\n\n", r.Command)
	}
	where := "each run in a process of its own (peak RSS: that process's VmHWM)"
	if !r.Isolated {
		where = "in the harness's process"
	}
	fmt.Fprintf(w, "%d B JSON-like values produced with %s (franz-go's default), %d partitions; kbatch MaxBufferedRecords %s, MaxBufferedBytes %s; "+
		"a handler that waits %s per record of its batch; %d runs per backlog, %s. Broker: %s; %s, %d CPUs (%s).\n\n",
		r.ValueBytes, r.Compression, r.Partitions, groupDigits(int64(r.MaxBufferedRecords)), sizeLabel(r.MaxBufferedBytes),
		r.RecordWait, r.Runs, where, r.Broker, r.Go, r.NumCPU, r.CPU)
	if r.Consumer != "" {
		fmt.Fprintf(w, "The consumer process runs %s.\n\n", r.Consumer)
	}
	fmt.Fprintf(w, "Limit: MaxBufferedBytes %s + constant %s = %s.\n\n", sizeLabel(r.MaxBufferedBytes), sizeLabel(r.Slack), sizeLabel(r.Limit))
	rows := [][]string{{"backlog", "records", "peak RSS (median)", "peak RSS (max)", "limit", "within", "kbatch peak buffered", "records/s", "runs ok"}}
	for _, p := range r.Points {
		within := "yes"
		if !p.Met {
			within = "NO"
		}
		runs := 0
		if p.Report != nil {
			if s := p.Report.scenario(boundedKey); s != nil {
				runs = len(s.Runs)
			}
		}
		rows = append(rows, []string{
			countLabel(p.Backlog), groupDigits(p.Backlog), bytesText(p.PeakRSSMedian), bytesText(p.PeakRSSMax), sizeLabel(r.Limit), within,
			fmt.Sprintf("%s rec, %s", groupDigits(p.PeakBufferedRecords), bytesText(float64(p.PeakBufferedBytes))),
			groupDigits(int64(p.RecordsPerSec)), fmt.Sprintf("%d/%d", p.OKRuns, runs),
		})
	}
	printMarkdownTable(w, rows, 5) // the verdict column is text
	fmt.Fprintln(w)
	verdict := "met"
	if !r.Met {
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "- verdict: %s (every run of every backlog within %s)\n", verdict, sizeLabel(r.Limit))
	if g := r.Growth; g != nil {
		fmt.Fprintf(w, "- peak RSS, backlog %s ÷ %s: %s\n", g.To, g.From, ratioText(g.Ratio))
	}
	fmt.Fprintln(w, "- kbatch peak buffered: the consumer's own Stats (PeakBufferedRecords, PeakBufferedBytes), highest over runs: what kbatch counts against its bound; the RSS is everything the process holds")
	for _, p := range r.Points {
		if p.Report == nil {
			continue
		}
		for _, s := range p.Report.Scenarios {
			for _, rr := range s.Runs {
				if !rr.OK {
					fmt.Fprintf(w, "- FAILED at %s, run %d: %s\n", countLabel(p.Backlog), rr.Run, rr.Error)
				}
			}
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- note: %s\n", n)
	}
}

// writeFiles writes base.json and base.md.
func (r *MemReport) writeFiles(base string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", append(b, '\n'), 0o644); err != nil {
		return err
	}
	var md bytes.Buffer
	r.writeMarkdown(&md, true)
	return os.WriteFile(base+".md", md.Bytes(), 0o644)
}
