package offkey

import (
	"strconv"
	"testing"
)

func TestParseDigits(t *testing.T) {
	for _, s := range []string{"", "0", "7", "00", "01", "-1", "+1", "1a", "a1", " 1", "1 ", "12345678901234",
		"9223372036854775807", "9223372036854775808", "18446744073709551615", "99999999999999999999", "1/2"} {
		got, ok := ParseDigits(s)
		// The reference: strconv, restricted to the canonical spelling.
		want, err := strconv.ParseInt(s, 10, 64)
		wantOK := err == nil && want >= 0 && strconv.FormatInt(want, 10) == s
		if ok != wantOK || (ok && got != want) {
			t.Errorf("ParseDigits(%q) = %d, %v; want %d, %v", s, got, ok, want, wantOK)
		}
	}
}

func FuzzParseDigits(f *testing.F) {
	for _, s := range []string{"0", "42", "007", "9223372036854775808", "-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseDigits(s)
		want, err := strconv.ParseInt(s, 10, 64)
		wantOK := err == nil && want >= 0 && strconv.FormatInt(want, 10) == s
		if ok != wantOK || (ok && got != want) {
			t.Fatalf("ParseDigits(%q) = %d, %v; want %d, %v", s, got, ok, want, wantOK)
		}
	})
}
