//go:build !memchild

package main

import (
	"encoding/binary"
	"testing"
	"time"
)

// frame builds a request frame: size, API key, then body bytes.
func frame(apiKey int16, body int) []byte {
	b := make([]byte, 6+body)
	binary.BigEndian.PutUint32(b, uint32(2+body))
	binary.BigEndian.PutUint16(b[4:], uint16(apiKey))
	for i := 6; i < len(b); i++ {
		b[i] = 8 // bytes that look like the OffsetCommit key, to catch misframing
	}
	return b
}

// TestWireCountsRequestsHoweverWritesSplitThem guards the commit counts of
// the table: frames split at any byte, or joined in one write, are counted
// once each.
func TestWireCountsRequestsHoweverWritesSplitThem(t *testing.T) {
	var stream []byte
	stream = append(stream, frame(apiOffsetCommit, 40)...)
	stream = append(stream, frame(apiFetch, 3)...)
	stream = append(stream, frame(18, 0)...) // ApiVersions, empty body
	stream = append(stream, frame(apiOffsetCommit, 0)...)
	stream = append(stream, frame(apiFetch, 100)...)
	for chunk := 1; chunk <= len(stream); chunk++ {
		w := &Wire{}
		c := &countingConn{w: w}
		for i := 0; i < len(stream); i += chunk {
			c.scan(stream[i:min(i+chunk, len(stream))])
		}
		if w.Commits() != 2 || w.Fetches() != 2 {
			t.Fatalf("writes of %d bytes: commits %d fetches %d, want 2 and 2", chunk, w.Commits(), w.Fetches())
		}
	}
}

// TestWireFirstFetchStartsTheClock guards the rate's clock: it starts at the
// first Fetch request, not at other requests, and later fetches leave it.
func TestWireFirstFetchStartsTheClock(t *testing.T) {
	w := &Wire{}
	c := &countingConn{w: w}
	c.scan(frame(apiOffsetCommit, 10))
	c.scan(frame(18, 0))
	if !w.FirstFetch().IsZero() {
		t.Fatalf("FirstFetch = %v before any Fetch request", w.FirstFetch())
	}
	before := time.Now()
	c.scan(frame(apiFetch, 5))
	first := w.FirstFetch()
	if first.Before(before) || first.After(time.Now()) {
		t.Fatalf("FirstFetch = %v, want between %v and now", first, before)
	}
	time.Sleep(2 * time.Millisecond)
	c.scan(frame(apiFetch, 5))
	if !w.FirstFetch().Equal(first) {
		t.Fatalf("a second Fetch moved FirstFetch from %v to %v", first, w.FirstFetch())
	}
}
