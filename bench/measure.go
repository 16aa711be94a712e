package main

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"
)

// meter measures one scenario of this process: allocations (MemStats
// deltas), the peak of HeapInuse (sampled, since MemStats keeps no peak),
// the peak RSS (VmHWM after resetting it, where Linux allows), and CPU time.
// The broker runs in another process (see broker.go), so all of it is the
// client's.
type meter struct {
	start      time.Time
	ms0        runtime.MemStats
	cpu0       time.Duration
	rssReset   bool
	whole      bool // the process is this scenario's own: its peak is the scenario's
	stop       chan struct{}
	wg         sync.WaitGroup
	peakHeapMu sync.Mutex
	peakHeap   uint64
}

// usage is what a meter measured.
type usage struct {
	Wall          time.Duration
	Mallocs       uint64
	AllocBytes    uint64
	PeakHeapInuse uint64
	PeakRSS       uint64 // 0 when unknown
	CPU           time.Duration
	GCs           uint32
}

// heapSamplePeriod is how often the heap is sampled.
const heapSamplePeriod = 10 * time.Millisecond

// startMeter collects garbage, returns freed memory to the OS and resets
// the RSS peak so that one scenario's numbers do not include the last one's,
// then starts sampling. In a scenario's own process (whole), the peak is
// not reset: the process's whole life is the scenario's.
func startMeter(whole bool) *meter {
	debug.FreeOSMemory()
	m := &meter{stop: make(chan struct{}), whole: whole}
	if !whole {
		m.rssReset = resetPeakRSS()
	}
	runtime.ReadMemStats(&m.ms0)
	m.cpu0 = cpuTime()
	m.start = time.Now()
	m.wg.Add(1)
	go m.sample()
	return m
}

func (m *meter) sample() {
	defer m.wg.Done()
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	t := time.NewTicker(heapSamplePeriod)
	defer t.Stop()
	for {
		metrics.Read(s)
		inuse := s[0].Value.Uint64() + s[1].Value.Uint64() // = MemStats.HeapInuse
		m.peakHeapMu.Lock()
		m.peakHeap = max(m.peakHeap, inuse)
		m.peakHeapMu.Unlock()
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
	}
}

// finish stops sampling and returns the measures.
func (m *meter) finish() usage {
	wall := time.Since(m.start)
	close(m.stop)
	m.wg.Wait()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	u := usage{
		Wall:       wall,
		Mallocs:    ms.Mallocs - m.ms0.Mallocs,
		AllocBytes: ms.TotalAlloc - m.ms0.TotalAlloc,
		CPU:        cpuTime() - m.cpu0,
		GCs:        ms.NumGC - m.ms0.NumGC,
	}
	m.peakHeapMu.Lock()
	u.PeakHeapInuse = max(m.peakHeap, ms.HeapInuse)
	m.peakHeapMu.Unlock()
	switch {
	case m.rssReset:
		u.PeakRSS = procStatusBytes("VmHWM:")
	case m.whole:
		// VmHWM is this process's own peak since its exec. Where there is
		// no /proc, getrusage's maxrss, which on Linux would also count the
		// parent's peak (exec records the vfork-shared memory's high-water
		// mark), but is right on the BSDs and macOS.
		if u.PeakRSS = procStatusBytes("VmHWM:"); u.PeakRSS == 0 {
			u.PeakRSS = selfMaxRSS()
		}
	}
	return u
}

// resetPeakRSS asks Linux to reset VmHWM to the current RSS (writing 5 to
// clear_refs, Linux 4.0+). It reports whether that worked; where it did not,
// VmHWM is the whole process's peak and is not reported per scenario.
func resetPeakRSS() bool {
	f, err := os.OpenFile("/proc/self/clear_refs", os.O_WRONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.WriteString("5")
	return err == nil
}

// procStatusBytes reads a "kB" line of /proc/self/status; 0 if absent.
func procStatusBytes(field string) uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(field)) {
			continue
		}
		f := bytes.Fields(line[len(field):])
		if len(f) == 0 {
			return 0
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0
		}
		return kb << 10
	}
	return 0
}
