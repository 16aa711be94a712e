//go:build !memchild

package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
)

// A line chart in SVG: points along a categorical x axis (the sweep's
// values, evenly spaced), one line per series, in one or more stacked
// panels that share the x axis.

type chartSeries struct {
	Name      string
	Y, Lo, Hi []float64 // one per x; NaN where the series has no value (failed)
}

type chartRef struct {
	Y     float64
	Label string
	Dash  string // SVG stroke-dasharray; "" solid
}

type chartPanel struct {
	Title  string
	Series []chartSeries
	Refs   []chartRef
	Format func(float64) string // tick and value labels
}

// seriesColors are given to series in order.
var seriesColors = []string{"#888888", "#3b7dd8", "#e08a1e", "#2a9d5b", "#a23bd8", "#c0392b", "#16a5a5", "#7a5c3e"}

func xmlText(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(x)))
	switch f := x / e; {
	case f <= 1:
		return e
	case f <= 2:
		return 2 * e
	case f <= 5:
		return 5 * e
	}
	return 10 * e
}

// lineChartSVG draws the panels stacked, with the title, subtitle lines,
// and the x axis named xAxis under each panel.
func lineChartSVG(title string, subtitles []string, xAxis string, xLabels []string, panels []chartPanel) []byte {
	const (
		width  = 900
		left   = 80
		right  = 190 // the legend
		panelH = 240
		gapH   = 70 // x labels and axis name under a panel, title of the next
	)
	top := 40 + 18*len(subtitles) + 30
	height := top + len(panels)*(panelH+gapH)
	plotW := float64(width - left - right)
	n := max(len(xLabels), 1)
	x := func(i int) float64 { return float64(left) + (float64(i)+0.5)*plotW/float64(n) }

	var buf bytes.Buffer
	fmt.Fprintf(&buf, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&buf, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&buf, `<text x="10" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", xmlText(title))
	for i, s := range subtitles {
		fmt.Fprintf(&buf, `<text x="10" y="%d" fill="#555">%s</text>`+"\n", 40+18*i, xmlText(s))
	}

	for pi, p := range panels {
		y0 := top + pi*(panelH+gapH) // top of the plot
		y1 := y0 + panelH            // its bottom
		ymax := 0.0
		for _, s := range p.Series {
			for i := range s.Y {
				for _, v := range []float64{s.Y[i], s.Hi[i]} {
					if !math.IsNaN(v) {
						ymax = max(ymax, v)
					}
				}
			}
		}
		for _, r := range p.Refs {
			ymax = max(ymax, r.Y)
		}
		step := niceStep(ymax * 1.08 / 5)
		ymax = math.Ceil(ymax*1.08/step) * step
		if ymax <= 0 {
			ymax = step
		}
		y := func(v float64) float64 { return float64(y1) - v/ymax*float64(panelH) }

		fmt.Fprintf(&buf, `<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", left, y0-10, xmlText(p.Title))
		for v := 0.0; v <= ymax+step/2; v += step {
			fmt.Fprintf(&buf, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", left, y(v), float64(left)+plotW, y(v))
			fmt.Fprintf(&buf, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle" fill="#555">%s</text>`+"\n", left-6, y(v), xmlText(p.Format(v)))
		}
		fmt.Fprintf(&buf, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`+"\n", left, y0, left, y1)
		fmt.Fprintf(&buf, `<line x1="%d" y1="%d" x2="%.1f" y2="%d" stroke="#999"/>`+"\n", left, y1, float64(left)+plotW, y1)
		for i, l := range xLabels {
			fmt.Fprintf(&buf, `<text x="%.1f" y="%d" text-anchor="middle" fill="#333">%s</text>`+"\n", x(i), y1+16, xmlText(l))
		}
		fmt.Fprintf(&buf, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`+"\n", float64(left)+plotW/2, y1+34, xmlText(xAxis))
		for ri, r := range p.Refs {
			// Labels at the left end, alternately above and below their
			// line, so that close lines (1 and 0.95) keep readable labels.
			ly := y(r.Y) - 4
			if ri%2 == 1 {
				ly = y(r.Y) + 12
			}
			fmt.Fprintf(&buf, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c33" stroke-dasharray="%s"/>`+"\n", left, y(r.Y), float64(left)+plotW, y(r.Y), r.Dash)
			fmt.Fprintf(&buf, `<text x="%d" y="%.1f" fill="#c33" font-size="11">%s</text>`+"\n", left+4, ly, xmlText(r.Label))
		}

		for si, s := range p.Series {
			color := seriesColors[si%len(seriesColors)]
			var path bytes.Buffer
			pen := false
			for i, v := range s.Y {
				if math.IsNaN(v) {
					pen = false
					continue
				}
				cmd := "L"
				if !pen {
					cmd = "M"
				}
				fmt.Fprintf(&path, "%s%.1f %.1f ", cmd, x(i), y(v))
				pen = true
			}
			if path.Len() > 0 {
				fmt.Fprintf(&buf, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", bytes.TrimSpace(path.Bytes()), color)
			}
			for i, v := range s.Y {
				if math.IsNaN(v) {
					fmt.Fprintf(&buf, `<text x="%.1f" y="%d" text-anchor="middle" fill="%s" font-weight="bold">✕<title>%s failed</title></text>`+"\n", x(i), y1-4-12*si, color, xmlText(s.Name))
					continue
				}
				if lo, hi := s.Lo[i], s.Hi[i]; !math.IsNaN(lo) && !math.IsNaN(hi) && hi > lo {
					fmt.Fprintf(&buf, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x(i), y(lo), x(i), y(hi), color)
					for _, e := range []float64{lo, hi} {
						fmt.Fprintf(&buf, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x(i)-4, y(e), x(i)+4, y(e), color)
					}
				}
				fmt.Fprintf(&buf, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s at %s: %s</title></circle>`+"\n",
					x(i), y(v), color, xmlText(s.Name), xmlText(xLabels[i]), xmlText(p.Format(v)))
			}
			ly := y0 + 8 + 18*si
			lx := float64(left) + plotW + 20
			fmt.Fprintf(&buf, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", lx, ly, lx+22, ly, color)
			fmt.Fprintf(&buf, `<text x="%.1f" y="%d" dominant-baseline="middle">%s</text>`+"\n", lx+28, ly, xmlText(s.Name))
		}
	}
	buf.WriteString("</svg>\n")
	return buf.Bytes()
}
