package main

import (
	"context"
	"encoding/binary"
	"net"
	"sync/atomic"
	"time"
)

// Kafka API keys the wire counter tells apart.
const (
	apiFetch        = 1
	apiOffsetCommit = 8
)

// Wire counts the Kafka requests a client writes to its connections, by
// reading the request headers as they go out. It is the one measure of
// commits that works the same for every client: kgo, kafka-go and sarama all
// accept a dial function, and none of kafka-go or sarama counts its commits.
// It reads plaintext Kafka framing only (the bench has no TLS or SASL).
type Wire struct {
	commits    atomic.Int64
	fetches    atomic.Int64
	firstFetch atomic.Int64 // Unix nanoseconds of the first Fetch request; 0 before it
	dialer     net.Dialer
}

func newWire() *Wire {
	return &Wire{dialer: net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}}
}

// Commits is the number of OffsetCommit requests written.
func (w *Wire) Commits() int64 { return w.commits.Load() }

// Fetches is the number of Fetch requests written.
func (w *Wire) Fetches() int64 { return w.fetches.Load() }

// FirstFetch is when the client wrote its first Fetch request, or the zero
// time before it did. A group member fetches only once it has joined and
// been assigned partitions, so this is where its consuming starts.
func (w *Wire) FirstFetch() time.Time {
	if n := w.firstFetch.Load(); n > 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// DialContext dials and wraps the connection; it fits kgo.Dialer and
// kafka.Dialer.DialFunc.
func (w *Wire) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	conn, err := w.dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, w: w}, nil
}

// Dial fits golang.org/x/net/proxy.Dialer, which sarama takes.
func (w *Wire) Dial(network, address string) (net.Conn, error) {
	return w.DialContext(context.Background(), network, address)
}

// countingConn parses the request frames written to it: each is a 4-byte
// big-endian size followed by the request, whose first two bytes are the API
// key. Writes may split or join frames anywhere.
type countingConn struct {
	net.Conn
	w *Wire

	head  [6]byte // the size and API key of the frame being read
	nhead int     // bytes of head filled
	skip  int64   // bytes of the current frame still to pass after its head
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.scan(b[:n])
	return n, err
}

// scan advances the frame parser over bytes written.
func (c *countingConn) scan(b []byte) {
	for len(b) > 0 {
		if c.skip > 0 {
			n := min(int64(len(b)), c.skip)
			c.skip -= n
			b = b[n:]
			continue
		}
		n := copy(c.head[c.nhead:], b)
		c.nhead += n
		b = b[n:]
		if c.nhead < len(c.head) {
			return
		}
		c.nhead = 0
		size := int64(int32(binary.BigEndian.Uint32(c.head[:4])))
		switch int16(binary.BigEndian.Uint16(c.head[4:6])) {
		case apiOffsetCommit:
			c.w.commits.Add(1)
		case apiFetch:
			c.w.fetches.Add(1)
			if c.w.firstFetch.Load() == 0 {
				c.w.firstFetch.CompareAndSwap(0, time.Now().UnixNano())
			}
		}
		c.skip = max(size-2, 0) // the API key was part of the frame
	}
}
