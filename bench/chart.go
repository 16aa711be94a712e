//go:build !memchild

package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"os"
)

// writeChart draws the ratios to the raw loop as a horizontal bar chart in
// SVG: one bar per scenario (the median), a whisker from the lowest to the
// highest run, a line at 1 (the raw loop) and one at 0.95 (kbatch's goal).
func (r *Report) writeChart(path string) error {
	return os.WriteFile(path, r.chartSVG(), 0o644)
}

func (r *Report) chartSVG() []byte {
	const (
		width    = 900
		left     = 340 // label column
		right    = 70  // room for the value labels
		top      = 84
		rowH     = 30
		barH     = 18
		bottomAx = 40
	)
	type bar struct {
		name           string
		ratio, lo, hi  float64
		failed, noBase bool
	}
	var bars []bar
	xmax := 1.1
	for _, s := range r.Scenarios {
		b := bar{name: s.Name, ratio: s.Median.Ratio, lo: s.Median.RatioMin, hi: s.Median.RatioMax}
		switch {
		case s.OKRuns == 0:
			b.failed = true
		case b.ratio <= 0:
			b.noBase = true
		}
		xmax = max(xmax, b.hi*1.05, b.ratio*1.05)
		bars = append(bars, b)
	}
	plotW := float64(width - left - right)
	x := func(v float64) float64 { return float64(left) + v/xmax*plotW }
	height := top + len(bars)*rowH + bottomAx

	var buf bytes.Buffer
	esc := func(s string) string {
		var b bytes.Buffer
		_ = xml.EscapeText(&b, []byte(s))
		return b.String()
	}
	fmt.Fprintf(&buf, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", width, height, width, height)
	fmt.Fprintf(&buf, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	title := fmt.Sprintf("Throughput relative to the raw franz-go poll loop (median of %d runs)", r.Params.Runs)
	fmt.Fprintf(&buf, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", 10, esc(title))
	sub := fmt.Sprintf("%s records × %d B, %d partitions; broker: %s", groupDigits(int64(r.Params.Records)), r.Params.ValueBytes, r.Params.Partitions, r.Broker)
	fmt.Fprintf(&buf, `<text x="%d" y="40" fill="#555" font-size="12">%s</text>`+"\n", 10, esc(sub))
	fmt.Fprintf(&buf, `<text x="%d" y="56" fill="#555" font-size="12">%s</text>`+"\n", 10,
		esc("bars: median of the per-run ratios; whiskers: lowest to highest run; dashed line: kbatch's goal, 0.95"))

	plotBottom := top + len(bars)*rowH
	// Grid and axis.
	step := 0.25
	if xmax > 3 {
		step = 0.5
	}
	if xmax > 6 {
		step = float64(int(xmax/6) + 1)
	}
	for v := 0.0; v <= xmax+1e-9; v += step {
		fmt.Fprintf(&buf, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`+"\n", x(v), top-6, x(v), plotBottom)
		fmt.Fprintf(&buf, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%.2f</text>`+"\n", x(v), plotBottom+16, v)
	}
	fmt.Fprintf(&buf, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">records/s ÷ raw loop records/s (same run)</text>`+"\n", x(xmax/2), plotBottom+34)
	for i, b := range bars {
		y := top + i*rowH
		cy := float64(y) + rowH/2.0
		fmt.Fprintf(&buf, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-8, cy, esc(b.name))
		switch {
		case b.failed:
			fmt.Fprintf(&buf, `<text x="%d" y="%.1f" dominant-baseline="middle" fill="#c00">failed</text>`+"\n", left+4, cy)
			continue
		case b.noBase:
			fmt.Fprintf(&buf, `<text x="%d" y="%.1f" dominant-baseline="middle" fill="#555">no raw loop to compare with</text>`+"\n", left+4, cy)
			continue
		}
		color := "#7a8ca3"
		if b.ratio >= 0.95 {
			color = "#3b7dd8"
		}
		fmt.Fprintf(&buf, `<rect x="%d" y="%.1f" width="%.1f" height="%d" fill="%s"/>`+"\n", left, cy-barH/2.0, x(b.ratio)-float64(left), barH, color)
		if b.hi > b.lo {
			fmt.Fprintf(&buf, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222"/>`+"\n", x(b.lo), cy, x(b.hi), cy)
			fmt.Fprintf(&buf, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222"/>`+"\n", x(b.lo), cy-4, x(b.lo), cy+4)
			fmt.Fprintf(&buf, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222"/>`+"\n", x(b.hi), cy-4, x(b.hi), cy+4)
		}
		label := fmt.Sprintf("%.3f", b.ratio)
		if b.ratio < 0.01 {
			label = fmt.Sprintf("%.4f (1/%.0f)", b.ratio, 1/b.ratio)
		}
		fmt.Fprintf(&buf, `<text x="%.1f" y="%.1f" dominant-baseline="middle">%s</text>`+"\n", max(x(b.ratio), x(b.hi))+6, cy, label)
	}
	for _, ref := range []struct {
		v     float64
		label string
		dash  string
	}{{1, "raw loop", ""}, {0.95, "0.95", "4 3"}} {
		fmt.Fprintf(&buf, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c33" stroke-dasharray="%s"/>`+"\n", x(ref.v), top-6, x(ref.v), plotBottom, ref.dash)
	}
	fmt.Fprintf(&buf, `<text x="%.1f" y="%d" text-anchor="middle" fill="#c33" font-size="11">1 = raw loop</text>`+"\n", x(1), top-10)
	buf.WriteString("</svg>\n")
	return buf.Bytes()
}
