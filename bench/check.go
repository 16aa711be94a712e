package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Span is the range of offsets [From, To) a scenario must receive from one
// partition.
type Span struct {
	From, To int64
}

// Len is the number of offsets in the span.
func (s Span) Len() int64 { return max(s.To-s.From, 0) }

// Checker verifies that a scenario received every record it was given to
// read: one bit per expected offset, so a record delivered twice counts once
// and a record never delivered is named at the end. Its methods are safe for
// concurrent use; each partition has its own lock, taken once per call, so a
// client that hands over records partition by partition pays one lock per
// chunk.
//
// The checker is also the scenario's clock: the last expected record stops
// it; it starts at the client's first Fetch request (ElapsedSince, with the
// Wire's FirstFetch) or, for a client whose requests are not seen, at the
// first record. Either way the rate leaves out group join and client
// shutdown.
type Checker struct {
	parts []*partCheck // by partition number; nil for a partition not expected
	want  int64

	got       atomic.Int64 // distinct expected records received
	delivered atomic.Int64 // every record handed to Mark, repeats and strays included
	bytes     atomic.Int64 // key+value bytes of the distinct expected records
	stray     atomic.Int64 // records outside every span (other partitions, later offsets)
	firstNano atomic.Int64 // when the first record arrived
	lastNano  atomic.Int64 // when the last expected record arrived

	doneOnce sync.Once
	done     chan struct{}
}

type partCheck struct {
	mu   sync.Mutex
	span Span
	bits []uint64
	seen int64
	dups int64
}

// NewChecker expects the spans, by partition number.
func NewChecker(spans map[int32]Span) *Checker {
	c := &Checker{done: make(chan struct{})}
	n := int32(0)
	for p := range spans {
		n = max(n, p+1)
	}
	c.parts = make([]*partCheck, n)
	for p, s := range spans {
		if s.Len() == 0 {
			continue
		}
		c.parts[p] = &partCheck{span: s, bits: make([]uint64, (s.Len()+63)/64)}
		c.want += s.Len()
	}
	if c.want == 0 {
		c.finish()
	}
	return c
}

// Want is the number of records expected.
func (c *Checker) Want() int64 { return c.want }

// Got is the number of distinct expected records received so far.
func (c *Checker) Got() int64 { return c.got.Load() }

// Bytes is the key+value size of the distinct expected records received.
func (c *Checker) Bytes() int64 { return c.bytes.Load() }

// Done is closed once every expected record was received.
func (c *Checker) Done() <-chan struct{} { return c.done }

// Complete reports whether every expected record was received.
func (c *Checker) Complete() bool { return c.got.Load() == c.want }

// Elapsed is the time from the first record to the last expected one (or to
// now while incomplete); zero before the first record.
func (c *Checker) Elapsed() time.Duration {
	first := c.firstNano.Load()
	if first == 0 {
		return 0
	}
	last := c.lastNano.Load()
	if last == 0 {
		last = time.Now().UnixNano()
	}
	return time.Duration(last - first)
}

// ElapsedSince is the time from start to the last expected record (or to
// now while incomplete), or Elapsed when start is zero or after the first
// record; zero before the first record.
func (c *Checker) ElapsedSince(start time.Time) time.Duration {
	el := c.Elapsed()
	first := c.firstNano.Load()
	if start.IsZero() || first == 0 || start.UnixNano() >= first {
		return el
	}
	return el + time.Duration(first-start.UnixNano())
}

// MarkRecords records the delivery of franz-go records of one partition.
func (c *Checker) MarkRecords(partition int32, recs []*kgo.Record) {
	if len(recs) == 0 {
		return
	}
	c.start()
	c.delivered.Add(int64(len(recs)))
	pc := c.part(partition)
	if pc == nil {
		c.stray.Add(int64(len(recs)))
		return
	}
	var fresh, bytes, stray int64
	pc.mu.Lock()
	for _, r := range recs {
		switch pc.mark(r.Offset) {
		case markNew:
			fresh++
			bytes += int64(len(r.Key) + len(r.Value))
		case markOutside:
			stray++
		}
	}
	pc.mu.Unlock()
	c.add(fresh, bytes, stray)
}

// MarkOne records the delivery of one record of size bytes (key plus value).
func (c *Checker) MarkOne(partition int32, offset int64, size int) {
	c.start()
	c.delivered.Add(1)
	pc := c.part(partition)
	if pc == nil {
		c.stray.Add(1)
		return
	}
	pc.mu.Lock()
	m := pc.mark(offset)
	pc.mu.Unlock()
	switch m {
	case markNew:
		c.add(1, int64(size), 0)
	case markOutside:
		c.add(0, 0, 1)
	}
}

// Expects reports whether the offset of the partition is one the checker
// waits for (so a scenario that reads a subset can tell which records to
// work on).
func (c *Checker) Expects(partition int32, offset int64) bool {
	pc := c.part(partition)
	return pc != nil && offset >= pc.span.From && offset < pc.span.To
}

type markResult int

const (
	markNew markResult = iota
	markRepeat
	markOutside
)

// mark sets the offset's bit; pc.mu must be held.
func (pc *partCheck) mark(offset int64) markResult {
	if offset < pc.span.From || offset >= pc.span.To {
		return markOutside
	}
	i := offset - pc.span.From
	w, bit := i>>6, uint64(1)<<(i&63)
	if pc.bits[w]&bit != 0 {
		pc.dups++
		return markRepeat
	}
	pc.bits[w] |= bit
	pc.seen++
	return markNew
}

func (c *Checker) part(partition int32) *partCheck {
	if partition < 0 || int(partition) >= len(c.parts) {
		return nil
	}
	return c.parts[partition]
}

func (c *Checker) start() {
	if c.firstNano.Load() == 0 {
		c.firstNano.CompareAndSwap(0, time.Now().UnixNano())
	}
}

func (c *Checker) add(fresh, bytes, stray int64) {
	if stray > 0 {
		c.stray.Add(stray)
	}
	if fresh == 0 {
		return
	}
	c.bytes.Add(bytes)
	if c.got.Add(fresh) == c.want {
		c.finish()
	}
}

func (c *Checker) finish() {
	c.doneOnce.Do(func() {
		c.lastNano.Store(time.Now().UnixNano())
		close(c.done)
	})
}

// Report summarises what arrived: nil error when every expected record did,
// else an error naming how many are missing and where.
func (c *Checker) Report() CheckReport {
	r := CheckReport{Want: c.want, Got: c.got.Load(), Delivered: c.delivered.Load(), Stray: c.stray.Load()}
	type miss struct {
		p    int32
		n    int64
		span Span
		from int64 // first missing offset
	}
	var misses []miss
	for p, pc := range c.parts {
		if pc == nil {
			continue
		}
		pc.mu.Lock()
		r.Repeats += pc.dups
		if n := pc.span.Len() - pc.seen; n > 0 {
			misses = append(misses, miss{p: int32(p), n: n, span: pc.span, from: pc.firstMissing()})
		}
		pc.mu.Unlock()
	}
	if len(misses) == 0 {
		return r
	}
	sort.Slice(misses, func(i, j int) bool { return misses[i].p < misses[j].p })
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d records missing:", r.Want-r.Got, r.Want)
	for i, m := range misses {
		if i == 4 {
			fmt.Fprintf(&b, " and %d more partitions", len(misses)-i)
			break
		}
		fmt.Fprintf(&b, " p%d %d (first at offset %d of [%d,%d))", m.p, m.n, m.from, m.span.From, m.span.To)
		if i < len(misses)-1 && i < 3 {
			b.WriteString(";")
		}
	}
	r.Missing = b.String()
	return r
}

// firstMissing is the lowest expected offset not received; pc.mu must be held.
func (pc *partCheck) firstMissing() int64 {
	for w, word := range pc.bits {
		if word == ^uint64(0) {
			continue
		}
		for bit := range 64 {
			i := int64(w)*64 + int64(bit)
			if i >= pc.span.Len() {
				return -1
			}
			if word&(1<<bit) == 0 {
				return pc.span.From + i
			}
		}
	}
	return -1
}

// CheckReport is the checker's verdict.
type CheckReport struct {
	Want      int64  `json:"want"`
	Got       int64  `json:"got"`
	Delivered int64  `json:"delivered"`
	Repeats   int64  `json:"repeats"` // expected records delivered more than once (extra deliveries)
	Stray     int64  `json:"stray"`   // records outside the expected spans
	Missing   string `json:"missing,omitempty"`
}

// OK reports whether every expected record arrived.
func (r CheckReport) OK() bool { return r.Got == r.Want }
