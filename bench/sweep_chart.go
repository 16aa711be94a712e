//go:build !memchild

package main

import (
	"fmt"
	"math"
)

// chartSVG draws a sweep: the ratio to the raw loop against the swept
// variable, one line per scenario (medians, whiskers from the lowest to the
// highest run), and under it each scenario's median peak RSS.
func (r *SweepReport) chartSVG() []byte {
	var labels []string
	for _, p := range r.Points {
		labels = append(labels, p.Label)
	}
	ratio := chartPanel{
		Title:  "records/s ÷ raw loop records/s (same run)",
		Refs:   []chartRef{{Y: 1, Label: "raw loop"}, {Y: 0.95, Label: "goal 0.95", Dash: "4 3"}},
		Format: func(v float64) string { return fmt.Sprintf("%.2f", v) },
	}
	rss := chartPanel{
		Title:  "peak RSS of the consumer process (MiB)",
		Format: func(v float64) string { return fmt.Sprintf("%.0f", v) },
	}
	for _, key := range r.Scenarios {
		rs := chartSeries{Name: key}
		ms := chartSeries{Name: key}
		for _, p := range r.Points {
			s := p.Report.scenario(key)
			if s == nil || s.OKRuns == 0 {
				for _, c := range []*chartSeries{&rs, &ms} {
					c.Y, c.Lo, c.Hi = append(c.Y, math.NaN()), append(c.Lo, math.NaN()), append(c.Hi, math.NaN())
				}
				continue
			}
			m := s.Median
			if m.Ratio > 0 {
				rs.Y, rs.Lo, rs.Hi = append(rs.Y, m.Ratio), append(rs.Lo, m.RatioMin), append(rs.Hi, m.RatioMax)
			} else {
				rs.Y, rs.Lo, rs.Hi = append(rs.Y, math.NaN()), append(rs.Lo, math.NaN()), append(rs.Hi, math.NaN())
			}
			lo, hi := rssRange(s)
			const mib = 1 << 20
			if m.PeakRSS > 0 {
				ms.Y, ms.Lo, ms.Hi = append(ms.Y, m.PeakRSS/mib), append(ms.Lo, lo/mib), append(ms.Hi, hi/mib)
			} else {
				ms.Y, ms.Lo, ms.Hi = append(ms.Y, math.NaN()), append(ms.Lo, math.NaN()), append(ms.Hi, math.NaN())
			}
		}
		ratio.Series = append(ratio.Series, rs)
		rss.Series = append(rss.Series, ms)
	}
	title := fmt.Sprintf("kbatch bench sweep: %s (median of %d runs)", r.Axis, r.Runs)
	subs := []string{fmt.Sprintf("broker: %s; %s, %d CPUs", r.Broker, r.Go, r.NumCPU)}
	if len(r.Points) > 0 {
		p := r.Points[0].Report.Params
		subs = append(subs, fmt.Sprintf("first point: %s records × %d B, %d partitions; whiskers: lowest to highest run",
			groupDigits(int64(p.Records)), p.ValueBytes, p.Partitions))
	}
	return lineChartSVG(title, subs, r.Axis, labels, []chartPanel{ratio, rss})
}

// rssRange is the lowest and highest peak RSS of a scenario's good runs.
func rssRange(s *ScenarioReport) (lo, hi float64) {
	var v []float64
	for _, rr := range s.Runs {
		if rr.OK && rr.PeakRSS > 0 {
			v = append(v, float64(rr.PeakRSS))
		}
	}
	if len(v) == 0 {
		return math.NaN(), math.NaN()
	}
	return minMax(v)
}
