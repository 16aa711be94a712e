//go:build !memchild

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
)

// suite is what every mode shares: the broker, the scenarios chosen, the
// progress display. A single run measures one point with it; a sweep
// measures one point per value; the memory check one per backlog.
type suite struct {
	o     *options
	b     *broker
	prog  *progress
	table []Scenario
	notes []string // said about every point (the Java reference skipped, ...)
	// childExe is the program isolated scenarios run in; empty: this one.
	childExe string
}

// startSuite starts (or names) the broker and picks the scenarios. Close
// stops the broker.
func startSuite(ctx context.Context, o *options, table []Scenario) (*suite, error) {
	s := &suite{o: o, prog: newProgress(os.Stderr, o.quiet), table: table}
	var err error
	switch {
	case o.brokers != "":
		s.b = externalBroker(strings.Split(o.brokers, ","))
	case o.kfakeInProc:
		s.b, err = startKfakeInProcess(o.kfakeBrokers)
	default:
		s.b, err = startKfakeChild(o.kfakeBrokers)
	}
	if err != nil {
		return nil, err
	}
	s.prog.note("broker: %s at %s", s.b.Kind, strings.Join(s.b.Addrs, ","))
	if o.isolate && o.cpuprofile != "" {
		s.notes = append(s.notes, "-cpuprofile given: scenarios ran in this process, not each in its own (-isolate off)")
	}
	return s, nil
}

// Close stops the broker if the suite started it.
func (s *suite) Close() error { return s.b.Close() }

// addJavaRef adds Kafka's ConsumerPerformance to the table when it can
// run: on a real broker, when asked for and found.
func (s *suite) addJavaRef(ctx context.Context) {
	o := s.o
	wantJava := o.only == "" || containsKey(o.only, "java-perf")
	switch {
	case o.brokers == "":
		if containsKey(o.only, "java-perf") {
			s.notes = append(s.notes, "java-perf runs only against a real broker (-brokers)")
		}
	case !o.java || !wantJava:
		s.notes = append(s.notes, "Java ConsumerPerformance reference not run (-java=false or not in -scenarios)")
	default:
		s.prog.note("checking Kafka's ConsumerPerformance (scripts/kafka/kafka.sh run-class; may resolve jars first) ...")
		j, err := findJavaRef(ctx, o.kafkaSh, o.javaTimeout)
		if err != nil {
			note := "Java ConsumerPerformance reference skipped: " + err.Error()
			s.notes = append(s.notes, note)
			s.prog.note("%s", note)
			return
		}
		s.table = append(s.table, j.scenario())
	}
}

// point is what one measurement produces and reads: the topic's shape and
// the scenarios' parameters. A sweep varies one field of it.
type point struct {
	Records      int
	Partitions   int
	ValueBytes   int
	Keys         int
	Compression  string
	Compressible bool          // values are text, not random bytes
	RecordWait   time.Duration // kbatch-bounded's handler wait per record
}

// basePoint is the point the flags describe.
func basePoint(o *options) point {
	return point{
		Records: o.records, Partitions: o.partitions, ValueBytes: o.valueBytes, Keys: o.keys,
		Compression: o.compression,
	}
}

// measure pre-produces a topic for p, runs every scenario of the table on
// it -runs times in rotated order, and returns the summarized report. With
// dropTopic, a topic it created is deleted afterwards (sweeps do, so that
// kfake does not hold every point's records at once).
func (s *suite) measure(ctx context.Context, p point, dropTopic bool) (*Report, error) {
	o := s.o
	if len(s.table) == 0 {
		return nil, errors.New("no scenario to run (java-perf needs -brokers)")
	}
	rep := &Report{
		Started:    time.Now(),
		Go:         runtime.Version(),
		OS:         runtime.GOOS + "/" + runtime.GOARCH,
		CPU:        cpuModel(),
		NumCPU:     runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Broker:     s.b.Kind,
		Brokers:    s.b.Addrs,
		Params: Params{
			Records: p.Records, Partitions: p.Partitions, ValueBytes: p.ValueBytes, Keys: p.Keys,
			Compression: p.Compression, Compressible: p.Compressible, Runs: o.runs, SyncRecords: o.syncRecords,
			Work: o.work.String(), BatchRecords: o.batchRecs, Stall: o.stall.String(), Scenarios: o.only, Isolated: s.isolated(),
		},
		Notes: append([]string(nil), s.notes...),
	}

	topic := o.topic
	if topic == "" {
		topic = uniqueName("kbatch-bench")
	}
	var produced atomic.Int64
	pt := s.prog.track("producing "+topic, int64(p.Records), produced.Load, false)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	data, err := prepareTopic(pctx, s.b.Addrs, topic, produceSpec{
		Records: p.Records, Partitions: p.Partitions, ValueBytes: p.ValueBytes, Keys: p.Keys,
		Replication: o.replication, Compression: p.Compression, Compressible: p.Compressible,
	}, &produced)
	cancel()
	if err != nil {
		pt.finish("failed")
		return nil, err
	}
	if data.Created {
		pt.finish(fmt.Sprintf("%s records, %s", groupDigits(data.Records), bytesText(float64(data.Bytes))))
	} else {
		pt.finish(fmt.Sprintf("reusing %s records already there", groupDigits(data.Records)))
		rep.Notes = append(rep.Notes, fmt.Sprintf("topic %s existed and was reused: -records, -partitions, -value-size, -keys did not apply", topic))
		rep.Params.Records, rep.Params.Partitions = int(data.Records), len(data.Spans)
	}
	rep.Data = data
	if data.Created && (dropTopic || o.brokers != "" && !o.keepTopic) {
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := deleteTopic(dctx, s.b.Addrs, topic); err != nil {
				fmt.Fprintf(os.Stderr, "bench: deleting topic %s: %v\n", topic, err)
			}
		}()
	}

	h := &harness{
		brokers:    s.b.Addrs,
		data:       data,
		subset:     subsetSpans(data.Spans, int64(o.syncRecords)),
		work:       o.work,
		batchRecs:  o.batchRecs,
		recordWait: p.RecordWait,
		stall:      o.stall,
		closeMax:   60 * time.Second,
		progress:   s.prog,
		isolate:    s.isolated(),
		childExe:   s.childExe,
	}
	results := make([][]RunResult, len(s.table))
	for run := 1; run <= o.runs; run++ {
		for i := range s.table {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			k := (i + run - 1) % len(s.table) // rotate: each run starts one scenario later
			sc := s.table[k]
			label := fmt.Sprintf("run %d/%d %s", run, o.runs, sc.Key)
			results[k] = append(results[k], h.run(ctx, sc, run, i+1, label))
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for k, sc := range s.table {
		want := data.Records
		if sc.Subset {
			want = NewChecker(h.subset).Want()
		}
		rep.Scenarios = append(rep.Scenarios, ScenarioReport{
			Key: sc.Key, Name: sc.Name, Subset: sc.Subset, External: sc.External, Want: want, Runs: results[k],
		})
	}
	rep.Finished = time.Now()
	rep.summarize()
	return rep, nil
}

// isolated reports whether scenarios run each in a process of its own:
// -isolate, unless a CPU profile of this process is asked for.
func (s *suite) isolated() bool { return s.o.isolate && s.o.cpuprofile == "" }
