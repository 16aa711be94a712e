package dedupe

import "time"

// InjectMalformed stores under key in p an entry no store writes (negative
// attempts), as a corrupted backend would hold, for the conformance suite's
// malformed-entry case.
func (b *MemoryBackend) InjectMalformed(p Partition, key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	mp := b.part(p)
	r := mp.ref(key)
	if old := mp.entry(r); old != nil {
		mp.remove(old)
	}
	me := &memEntry{key: key, off: r.off, isOff: r.isOff, e: Entry{Attempts: -1, Expires: time.Now().Add(100 * 365 * 24 * time.Hour)}}
	if r.isOff {
		mp.offs[r.off] = me
	} else {
		mp.keys[key] = me
	}
	mp.pushNewest(me)
}
