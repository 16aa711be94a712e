// Package offkey reads the offset a fallback idempotency key ends with. The
// dedupe stores read it for every record of a batch that has no key of its
// own, so it is spelt out by hand rather than with strconv.
package offkey

// ParseDigits returns the offset digits spell: a canonical non-negative
// decimal (no sign, no leading zero, no other byte) that fits an int64. ok
// is false for any other spelling.
func ParseDigits(digits string) (int64, bool) {
	n := len(digits)
	if n == 0 || n > 19 || (digits[0] == '0' && n > 1) {
		return 0, false
	}
	var v uint64
	for i := 0; i < n; i++ {
		d := digits[i] - '0'
		if d > 9 {
			return 0, false
		}
		v = v*10 + uint64(d)
	}
	if v > 1<<63-1 { // 19 digits cannot wrap a uint64, but can pass an int64
		return 0, false
	}
	return int64(v), true
}
