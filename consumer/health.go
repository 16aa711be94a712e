package consumer

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Health is the consumer's readiness and liveness.
type Health struct {
	// Ready: Run is running, the member joined the group (a session
	// assigned it its partitions, possibly none) and every owned
	// partition's state is loaded (the dedupe store's Assign returned).
	Ready bool
	// Live: Run has not stopped, and no partition has had records waiting
	// without its watermark moving for StallTimeout or longer.
	Live bool
	// Reason says why it is not ready or not live; empty when both hold.
	Reason string
	// Stalled lists the partitions stalled past StallTimeout.
	Stalled []PartitionStats `json:",omitempty"`
}

// Health reports the consumer's readiness and liveness.
func (c *Consumer) Health() Health {
	h := Health{Ready: true, Live: true}
	switch {
	case c.closedOrDone():
		h.Ready, h.Live, h.Reason = false, false, "stopped"
		if err := c.fatalErr(); err != nil {
			h.Reason = "stopped: " + err.Error()
		}
		return h
	case !c.running.Load():
		h.Ready, h.Reason = false, "not running"
		return h
	case c.stats.rebalances.Load() == 0:
		h.Ready, h.Reason = false, "not joined to the group yet"
	default:
		c.mu.Lock()
		loading := 0
		for _, w := range c.workers {
			if !w.loaded.Load() {
				loading++
			}
		}
		c.mu.Unlock()
		if loading > 0 {
			h.Ready, h.Reason = false, fmt.Sprintf("%d partitions loading their dedupe state", loading)
		}
	}
	if limit := c.cfg.StallTimeout; limit > 0 {
		for _, p := range c.Partitions() {
			if p.StalledSeconds >= limit.Seconds() {
				h.Stalled = append(h.Stalled, p)
			}
		}
		if len(h.Stalled) > 0 {
			h.Live = false
			p := h.Stalled[0]
			h.Reason = fmt.Sprintf("%d partitions stalled for %s or more (e.g. %s/%d: %d records waiting for %s)",
				len(h.Stalled), limit, p.Topic, p.Partition, p.Buffered, time.Duration(p.StalledSeconds*float64(time.Second)).Round(time.Second))
		}
	}
	return h
}

// closedOrDone reports whether Run returned or the consumer was closed.
func (c *Consumer) closedOrDone() bool {
	select {
	case <-c.runDone:
		return true
	case <-c.closing:
		return true
	default:
		return false
	}
}

// HealthHandler serves the consumer's health over HTTP: /readyz answers 200
// when Ready, /healthz (and /livez) 200 when Live, 503 otherwise, with the
// Health as JSON. Mount it where the orchestrator probes, e.g.
// http.Handle("/", c.HealthHandler()).
func (c *Consumer) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	serve := func(ok func(Health) bool) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			h := c.Health()
			w.Header().Set("Content-Type", "application/json")
			if !ok(h) {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			_ = json.NewEncoder(w).Encode(h)
		}
	}
	mux.Handle("/readyz", serve(func(h Health) bool { return h.Ready }))
	live := serve(func(h Health) bool { return h.Live })
	mux.Handle("/healthz", live)
	mux.Handle("/livez", live)
	return mux
}
