package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progress shows, on stderr, how far the current step is: records consumed
// by the running scenario, or records produced. On a terminal it redraws
// one line; elsewhere it prints a line every few seconds. Quiet shows
// nothing.
type progress struct {
	w     io.Writer
	tty   bool
	quiet bool
	mu    sync.Mutex // one line at a time
}

func newProgress(w io.Writer, quiet bool) *progress {
	p := &progress{w: w, quiet: quiet}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// tracker redraws one step's line until done is called.
type tracker struct {
	p     *progress
	label string
	want  int64
	got   func() int64
	ext   bool
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

// track starts showing a step; got reports how far it is out of want.
// External steps report nothing until they end: only the time is shown.
func (p *progress) track(label string, want int64, got func() int64, external bool) *tracker {
	t := &tracker{p: p, label: label, want: want, got: got, ext: external, start: time.Now(), stop: make(chan struct{})}
	if p.quiet {
		return t
	}
	period := 5 * time.Second
	if p.tty {
		period = 200 * time.Millisecond
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
				t.p.line(t.status(), false)
			}
		}
	}()
	return t
}

func (t *tracker) status() string {
	el := time.Since(t.start)
	if t.ext {
		return fmt.Sprintf("%-40s running %5.1fs", t.label, el.Seconds())
	}
	got := t.got()
	pct := 0.0
	if t.want > 0 {
		pct = 100 * float64(got) / float64(t.want)
	}
	return fmt.Sprintf("%-40s %13s / %-13s %5.1f%% %6.1fs", t.label, groupDigits(got), groupDigits(t.want), pct, el.Seconds())
}

// done stops the display and prints the scenario's result line.
func (t *tracker) done(r RunResult) {
	close(t.stop)
	t.wg.Wait()
	if t.p.quiet {
		return
	}
	verdict := "ok"
	if !r.OK {
		verdict = "FAILED: " + r.Error
	}
	t.p.line(fmt.Sprintf("%-40s %13s records %12s rec/s  %6.1fs  %s",
		t.label, groupDigits(r.Records), groupDigits(int64(r.RecordsPerSec)), r.WallSec, verdict), true)
}

// finish stops a step that is not a scenario and prints msg for it.
func (t *tracker) finish(msg string) {
	close(t.stop)
	t.wg.Wait()
	if !t.p.quiet {
		t.p.line(fmt.Sprintf("%-40s %s", t.label, msg), true)
	}
}

// note prints a line unless quiet.
func (p *progress) note(format string, args ...any) {
	if !p.quiet {
		p.line(fmt.Sprintf(format, args...), true)
	}
}

func (p *progress) line(s string, final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.tty && final:
		fmt.Fprintf(p.w, "\r\033[K%s\n", s)
	case p.tty:
		fmt.Fprintf(p.w, "\r\033[K%s", s)
	default:
		fmt.Fprintln(p.w, s)
	}
}

// groupDigits writes n with thousands separators.
func groupDigits(n int64) string {
	s := fmt.Sprint(n)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
