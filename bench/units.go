package main

import (
	"fmt"
	"strconv"
	"strings"
)

// parseSize reads a byte size: a whole number with an optional unit, B,
// KiB, MiB or GiB (powers of 1024), or kB, MB, GB (powers of 1000).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
	}
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q (e.g. 100, 1KiB, 8MiB)", s)
	}
	return n * mult, nil
}

// parseCount reads a count: a whole number with an optional k, M or G
// (thousands, millions, billions).
func parseCount(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	switch {
	case strings.HasSuffix(t, "k"), strings.HasSuffix(t, "K"):
		mult, t = 1e3, t[:len(t)-1]
	case strings.HasSuffix(t, "M"):
		mult, t = 1e6, t[:len(t)-1]
	case strings.HasSuffix(t, "G"):
		mult, t = 1e9, t[:len(t)-1]
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(t, "_", ""), 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("bad count %q (e.g. 8, 500k, 4M)", s)
	}
	return n * mult, nil
}

// parseCounts reads a comma-separated list of counts.
func parseCounts(list string) ([]int64, error) {
	return parseList(list, parseCount)
}

func parseList(list string, parse func(string) (int64, error)) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(list, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		n, err := parse(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no values in %q", list)
	}
	return out, nil
}

// sizeLabel writes a size the way the flags take it: 100 B, 1 KiB, 8 MiB
// when exact, else with one decimal.
func sizeLabel(n int64) string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult {
			if n%u.mult == 0 {
				return fmt.Sprintf("%d %s", n/u.mult, u.name)
			}
			return fmt.Sprintf("%.1f %s", float64(n)/float64(u.mult), u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// countLabel writes a count shortly: 8, 1M, 2.5M, 500k.
func countLabel(n int64) string {
	switch {
	case n >= 1e6 && n%1e5 == 0:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1e3 && n%100 == 0:
		return strconv.FormatFloat(float64(n)/1e3, 'f', -1, 64) + "k"
	}
	return groupDigits(n)
}

// sizeFlag is a flag.Value for a byte size.
type sizeFlag int64

func (f *sizeFlag) String() string {
	if f == nil {
		return "0"
	}
	return sizeLabel(int64(*f))
}

func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f = sizeFlag(n)
	return nil
}
