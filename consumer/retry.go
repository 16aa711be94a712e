package consumer

import (
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// retry runs op until it succeeds, waiting with Retry's backoff between
// tries: the one retry loop of the store, dead-letter and assign calls (the
// handler's retries, which count attempts per record, are in deliver.go and
// use the same backoff and sleep). Each failure is counted in errs and
// logged as what failing. It reports false when the worker must stop: it
// was cancelled or asked to drain, or refuses(err) said the error can never
// pass here.
func (w *worker) retry(what string, errs *atomic.Int64, refuses func(error) bool, op func() error) bool {
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return true
		}
		errs.Add(1)
		if w.ctx.Err() != nil {
			return false
		}
		if refuses != nil && refuses(err) {
			w.c.cfg.Logger.Warn("kbatch: "+what+" refused, stopping the partition", "partition", w.tp.String(), "err", err)
			return false
		}
		wait := backoff(w.c.cfg.Retry, attempt)
		w.c.sampler.log(w.c.cfg.Logger, slog.LevelWarn, what+" "+w.tp.String(), "kbatch: "+what+" failed, partition waits",
			"partition", w.tp.String(), "attempt", attempt, "retry_in", wait, "err", err)
		if !w.sleep(wait) {
			return false
		}
	}
}

// sleep waits d unless the worker is asked to stop; it reports false then.
func (w *worker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.ctx.Done():
		return false
	case <-w.drain:
		return false
	}
}

// backoff is Initial doubled per failed attempt, capped at Max, with ±20%
// jitter so that partitions failing together do not retry in lockstep.
func backoff(r Retry, attempt int) time.Duration {
	d := r.Initial
	for i := 1; i < attempt && d < r.Max; i++ {
		d *= 2
	}
	if d > r.Max {
		d = r.Max
	}
	jitter := time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	return d + jitter
}
