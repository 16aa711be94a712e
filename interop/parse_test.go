package interop

import (
	"strings"
	"testing"
)

// The table as Kafka 4.3.1's ConsumerGroupCommand --describe --offsets
// prints it for a group with no active members.
const describeSample = `
Consumer group 'g1' has no active members.

GROUP           TOPIC           PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG             CONSUMER-ID     HOST            CLIENT-ID
g1              t1              0          4999            4999            0               -               -               -
g1              t1              1          5001            5003            2               -               -               -
`

// Guards the interop test's reading of the Java tool: a lag it misreads
// would make the LAG-0 assertion pass for nothing.
func TestParseOffsetsReadsTheJavaToolsTable(t *testing.T) {
	rows, err := parseOffsets(describeSample)
	if err != nil {
		t.Fatal(err)
	}
	want := []offsetRow{
		{topic: "t1", partition: 0, current: 4999, logEnd: 4999, lag: 0},
		{topic: "t1", partition: 1, current: 5001, logEnd: 5003, lag: 2},
	}
	if len(rows) != len(want) {
		t.Fatalf("rows = %+v, want %+v", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, rows[i], want[i])
		}
	}

	// A partition without a committed offset shows "-": that must fail
	// loudly, not read as lag 0.
	noCommit := strings.Replace(describeSample, "5001            5003            2", "-               5003            -", 1)
	if _, err := parseOffsets(noCommit); err == nil {
		t.Error("a row with CURRENT-OFFSET '-' parsed without error")
	}
	if _, err := parseOffsets("Error: Consumer group 'g1' does not exist.\n"); err == nil {
		t.Error("output without a table parsed without error")
	}
}
