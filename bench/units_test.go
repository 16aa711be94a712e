//go:build !memchild

package main

import "testing"

// TestParseSizeAndCount guards the units the sweep and memory-check flags
// take: a wrong multiplier would silently measure another point.
func TestParseSizeAndCount(t *testing.T) {
	sizes := map[string]int64{"100": 100, "100B": 100, "1KiB": 1024, "10 KiB": 10240, "8MiB": 8 << 20, "1GiB": 1 << 30, "2kB": 2000, "3MB": 3e6}
	for in, want := range sizes {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "KiB", "1.5MiB", "-1", "ten"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
	counts := map[string]int64{"8": 8, "1024": 1024, "500k": 500_000, "1M": 1_000_000, "4M": 4_000_000, "1_000": 1000}
	for in, want := range counts {
		if got, err := parseCount(in); err != nil || got != want {
			t.Errorf("parseCount(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-3", "1.5M", "M"} {
		if _, err := parseCount(bad); err == nil {
			t.Errorf("parseCount(%q) accepted", bad)
		}
	}
	if got, err := parseCounts("1M, 3M,"); err != nil || len(got) != 2 || got[1] != 3_000_000 {
		t.Errorf("parseCounts = %v, %v", got, err)
	}
}

// TestLabels guards how sweep points are named in tables and charts.
func TestLabels(t *testing.T) {
	for n, want := range map[int64]string{100: "100 B", 1024: "1 KiB", 10240: "10 KiB", 102400: "100 KiB", 1536: "1.5 KiB", 8 << 20: "8 MiB"} {
		if got := sizeLabel(n); got != want {
			t.Errorf("sizeLabel(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int64]string{8: "8", 1_000_000: "1M", 4_000_000: "4M", 2_500_000: "2.5M", 500_000: "500k", 1234: "1,234"} {
		if got := countLabel(n); got != want {
			t.Errorf("countLabel(%d) = %q, want %q", n, got, want)
		}
	}
}
