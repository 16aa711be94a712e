package consumer

import "github.com/twmb/franz-go/pkg/kgo"

// RecordState is what kbatch knows of a record when it hands it out: its
// idempotency key, how many times it has been handed out (this time
// included) and the markers earlier deliveries recorded. NewTestBatch takes
// one per record.
type RecordState struct {
	Key      string
	Attempts int // at least 1; 0 means 1
	Markers  []string
}

// NewTestBatch builds a Batch as kbatch hands one to a handler, for unit
// tests of handlers: Attempts, Key, Markers and HasMarker answer from states
// (one per record; nil for first deliveries without keys), and Mark records
// markers on the batch, in memory (see Markers) since there is no store.
// Attempt is the first record's attempts.
//
//	b := consumer.NewTestBatch("orders", 0, recs, []consumer.RecordState{{Key: "o-1", Attempts: 2, Markers: []string{"charged"}}})
//	err := handler(ctx, b) // must not charge o-1 again
func NewTestBatch(topic string, partition int32, records []*kgo.Record, states []RecordState) *Batch {
	b := &Batch{Topic: topic, Partition: partition, Records: records, Attempt: 1, Reason: FlushRecords,
		state: make([]*recState, len(records))}
	for i := range records {
		st := &recState{attempts: 1}
		if i < len(states) {
			s := states[i]
			st.key, st.attempts = s.Key, max(s.Attempts, 1)
			st.markers = append([]string(nil), s.Markers...)
		}
		b.state[i] = st
	}
	if len(b.state) > 0 {
		b.Attempt = b.state[0].attempts
	}
	return b
}

// WithToken sets the fencing token (Token) of a batch made by NewTestBatch
// and returns the batch, for tests of handlers that fence their sink:
//
//	b := consumer.NewTestBatch("orders", 0, recs, nil).WithToken(7)
//
// On a batch kbatch handed out it does nothing: its token is the
// partition's ownership's.
func (b *Batch) WithToken(token FencingToken) *Batch {
	b.token = token
	return b
}
