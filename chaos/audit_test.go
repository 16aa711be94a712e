package chaos

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

// audit reads the members' ledgers (one file per process incarnation, in the
// format chaos/member writes) and checks them against what was produced:
// record i has key "k<i>" (kafkatest.ProduceN), and partition p holds offsets
// [0, end[p]).
type audit struct {
	end  []int64 // per partition
	keys int     // records produced

	count []([]uint32) // deliveries per partition and offset
	keyAt []([]int32)  // key index seen at a partition and offset; -1 before any
	seen  []bool       // per key index

	Handled         int64 // ledger lines (deliveries)
	Duplicates      int64 // deliveries beyond the first of a record
	OrderViolations int64 // offsets not increasing within one ownership run
	KeyMismatches   int64 // an offset seen with two keys, or a key that was never produced
	Phantoms        int64 // offsets or partitions that do not exist
	BadLines        int64 // lines that do not parse (other than a cut last line)
	CutTails        int   // files whose last line was cut (the writer was SIGKILLed mid-write)
	Runs            int   // ownership runs: (incarnation, member id and session, generation, partition)
	MaxGeneration   int32

	// ByKey judges order per key instead of per partition (the ByKey
	// ordering): within one ownership run, the offsets of each key must
	// strictly increase; OrderViolations counts the records that do not.
	ByKey bool

	Examples []string // the first few problems, for the failure message
}

func newAudit(end []int64, keys int) *audit {
	a := &audit{end: end, keys: keys, seen: make([]bool, keys)}
	a.count = make([][]uint32, len(end))
	a.keyAt = make([][]int32, len(end))
	for p, e := range end {
		a.count[p] = make([]uint32, e)
		a.keyAt[p] = make([]int32, e)
		for i := range a.keyAt[p] {
			a.keyAt[p][i] = -1
		}
	}
	return a
}

func (a *audit) problem(format string, args ...any) {
	if len(a.Examples) < 10 {
		a.Examples = append(a.Examples, fmt.Sprintf(format, args...))
	}
}

// run is where one partition's current ownership run of one file stands.
type run struct {
	gen    int32
	member string
	last   int64
	byKey  map[string]int64 // with ByKey: the last offset of each key
}

// addFile reads one incarnation's ledger. Within it, a run of a partition is
// the lines with the same member id and generation; offsets must strictly
// increase within a run. A new run may start anywhere (a partition that
// comes back replays from its committed offset).
func (a *audit) addFile(name string, r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<20)
	runs := map[int32]*run{}
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("%s:%d: line longer than 1 MiB", name, lineNo)
		}
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				a.CutTails++
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		p, off, gen, member, key, ok := parseLine(line[:len(line)-1])
		if !ok {
			a.BadLines++
			a.problem("%s:%d: bad line %q", name, lineNo, line)
			continue
		}
		a.Handled++
		if gen > a.MaxGeneration {
			a.MaxGeneration = gen
		}
		if p < 0 || int(p) >= len(a.end) || off < 0 || off >= a.end[p] {
			a.Phantoms++
			a.problem("%s:%d: partition %d offset %d was never produced", name, lineNo, p, off)
			continue
		}
		cur := runs[p]
		if cur == nil || cur.gen != gen || cur.member != string(member) {
			cur = &run{gen: gen, member: string(member), last: off}
			if a.ByKey {
				cur.byKey = map[string]int64{string(key): off}
			}
			runs[p] = cur
			a.Runs++
		} else if a.ByKey {
			if last, ok := cur.byKey[string(key)]; ok && off <= last {
				a.OrderViolations++
				a.problem("%s:%d: partition %d key %s offset %d after %d in the same run (generation %d)", name, lineNo, p, key, off, last, gen)
			}
			cur.byKey[string(key)] = off
		} else {
			if off <= cur.last {
				a.OrderViolations++
				a.problem("%s:%d: partition %d offset %d after %d in the same run (generation %d)", name, lineNo, p, off, cur.last, gen)
			}
			cur.last = off
		}
		if a.count[p][off] > 0 {
			a.Duplicates++
		}
		a.count[p][off]++
		ki, kok := keyIndex(key)
		if !kok || ki >= a.keys {
			a.KeyMismatches++
			a.problem("%s:%d: partition %d offset %d has key %q, never produced", name, lineNo, p, off, key)
			continue
		}
		if prev := a.keyAt[p][off]; prev >= 0 && int(prev) != ki {
			a.KeyMismatches++
			a.problem("%s:%d: partition %d offset %d has key %q, earlier k%d", name, lineNo, p, off, key, prev)
		}
		a.keyAt[p][off] = int32(ki)
		a.seen[ki] = true
	}
}

// Lost returns the produced offsets no ledger has, and the produced keys no
// ledger has: both must be 0.
func (a *audit) Lost() (offsets, keys int64) {
	for p := range a.count {
		for o, n := range a.count[p] {
			if n == 0 {
				offsets++
				a.problem("partition %d offset %d was never handled", p, o)
			}
		}
	}
	for _, s := range a.seen {
		if !s {
			keys++
		}
	}
	return offsets, keys
}

// parseLine splits "<partition> <offset> <generation> <member> <key>"; the
// key is the rest of the line.
func parseLine(line []byte) (p int32, off int64, gen int32, member, key []byte, ok bool) {
	var f [4][]byte
	rest := line
	for i := range f {
		j := bytes.IndexByte(rest, ' ')
		if j < 0 {
			return 0, 0, 0, nil, nil, false
		}
		f[i], rest = rest[:j], rest[j+1:]
	}
	p64, err1 := strconv.ParseInt(string(f[0]), 10, 32)
	off, err2 := strconv.ParseInt(string(f[1]), 10, 64)
	g64, err3 := strconv.ParseInt(string(f[2]), 10, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, 0, nil, nil, false
	}
	return int32(p64), off, int32(g64), f[3], rest, true
}

// keyIndex parses "k<i>".
func keyIndex(key []byte) (int, bool) {
	if len(key) < 2 || key[0] != 'k' {
		return 0, false
	}
	i, err := strconv.Atoi(string(key[1:]))
	return i, err == nil && i >= 0
}

// Guards the auditor itself: a chaos run that reports lost = 0 and order
// violations = 0 is only worth something if the auditor sees a gap, a
// rewind inside one ownership run, a duplicate, a wrong key and a phantom
// offset, and forgives a cut last line and a replay in a new run.
func TestAuditSeesLossDisorderDuplicatesAndForgivesReplays(t *testing.T) {
	// Two partitions of 4 records: partition p offset o holds k<2o+p>.
	a := newAudit([]int64{4, 4}, 8)
	inc1 := "" +
		"0 0 1 m-a k0\n" +
		"0 1 1 m-a k2\n" +
		"1 0 1 m-a k1\n" +
		"0 2 1 m-a k4\n" +
		"0 1 1 m-a k2\n" + // rewind in the same run: a violation and a duplicate
		"1 1 2 m-a k3\n" + // new generation: a new run
		"0 3 1 m-a k7\n" + // wrong key, caught when 0/3 comes again below
		"0 9 1 m-a k9\n" + // phantom offset
		"1 2 2 m-a k" // cut by SIGKILL: ignored
	inc2 := "" +
		"1 0 5 m-b k1\n" + // replay after a kill, another incarnation: a duplicate, no violation
		"1 1 5 m-b k3\n" +
		"0 3 5 m-b k6\n" + // k6 at 0/3: mismatch with the k7 seen earlier
		"not a line\n"
	if err := a.addFile("inc1", strings.NewReader(inc1)); err != nil {
		t.Fatal(err)
	}
	if err := a.addFile("inc2", strings.NewReader(inc2)); err != nil {
		t.Fatal(err)
	}
	lostOffsets, lostKeys := a.Lost()
	got := map[string]int64{
		"handled": a.Handled, "duplicates": a.Duplicates, "order": a.OrderViolations,
		"keys": a.KeyMismatches, "phantoms": a.Phantoms, "bad": a.BadLines, "cut": int64(a.CutTails),
		"lostOffsets": lostOffsets, "lostKeys": lostKeys, "maxGen": int64(a.MaxGeneration),
	}
	want := map[string]int64{
		// 8 complete lines in inc1 and 3 in inc2 (a phantom counts as handled)
		"handled": 11,
		// 0/1 again in inc1; 1/0, 1/1 and 0/3 again in inc2
		"duplicates": 4, "order": 1,
		"keys": 1, "phantoms": 1, "bad": 1, "cut": 1,
		// 1/2 and 1/3 were never handled; of the keys, only k5 never came
		"lostOffsets": 2, "lostKeys": 1, "maxGen": 5,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %d, want %d", k, got[k], w)
		}
	}
	if t.Failed() {
		t.Logf("examples: %q", a.Examples)
	}
}
