package report

import (
	"fmt"
	"html"
	"math"
	"sort"
	"strings"
)

// Hand-drawn SVG plots: line plots (CDFs and time series) and horizontal
// bar charts, with labelled axes, ticks and a legend. Output depends only
// on the data, so reports are reproducible too.

// Series is one line of a plot.
type Series struct {
	Name string
	X, Y []float64
}

// Plot sizes, in SVG user units (pixels).
const (
	plotW, plotH           = 640, 360
	marginL, marginR       = 70, 20
	marginT, marginB       = 36, 52
	maxPointsPerLine       = 400
	legendLine, legendStep = 22, 18
)

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

// CDF turns samples into an empirical CDF drawn as steps, from (min, 0)
// to (max, 1), with at most about 2*maxPointsPerLine points.
func CDF(name string, samples []float64) Series {
	xs := append([]float64(nil), samples...)
	sort.Float64s(xs)
	s := Series{Name: fmt.Sprintf("%s (n=%d)", name, len(xs))}
	n := len(xs)
	if n == 0 {
		return s
	}
	step := max(1, n/maxPointsPerLine)
	s.X, s.Y = append(s.X, xs[0]), append(s.Y, 0)
	for i := 0; i < n; i += step {
		j := min(n-1, i+step-1) // the step's last sample
		s.X = append(s.X, xs[j], xs[j])
		s.Y = append(s.Y, float64(i)/float64(n), float64(j+1)/float64(n))
	}
	return s
}

// CDFPlot draws CDFs (from CDF) on shared axes. A heavy tail (timeouts)
// would squeeze the bulk of the curves into a corner, so when the largest
// sample is more than three times the 99th percentile of all of them, the
// x axis stops at that percentile and the title says so.
func CDFPlot(title, xLabel, yLabel string, series []Series) string {
	var all []float64
	for _, s := range series {
		all = append(all, s.X...)
	}
	if len(all) < 20 {
		return LinePlot(title, xLabel, yLabel, series, 1)
	}
	sort.Float64s(all)
	clip := all[int(0.99*float64(len(all)-1))]
	if clip <= 0 || all[len(all)-1] <= 3*clip {
		return LinePlot(title, xLabel, yLabel, series, 1)
	}
	cut := make([]Series, len(series))
	for i, s := range series {
		c := Series{Name: s.Name}
		for j := range s.X {
			if s.X[j] > clip {
				if j > 0 {
					c.X, c.Y = append(c.X, clip), append(c.Y, s.Y[j-1])
				}
				break
			}
			c.X, c.Y = append(c.X, s.X[j]), append(c.Y, s.Y[j])
		}
		cut[i] = c
	}
	return LinePlot(title+", to the 99th percentile", xLabel, yLabel, cut, 1)
}

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		out = append(out, v+0) // +0 turns -0 into 0
	}
	return out
}

func fmtTick(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return fmt.Sprintf("%.0f", v)
	}
	s := fmt.Sprintf("%.3g", v)
	return s
}

// LinePlot draws series on shared axes. yMax 0 means from the data.
func LinePlot(title, xLabel, yLabel string, series []Series, yMax float64) string {
	var b strings.Builder
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), yMax
	for _, s := range series {
		for i := range s.X {
			xmin, xmax = math.Min(xmin, s.X[i]), math.Max(xmax, s.X[i])
			if yMax == 0 {
				ymax = math.Max(ymax, s.Y[i])
			}
		}
	}
	header(&b, title)
	if math.IsInf(xmin, 1) {
		empty(&b)
		return b.String()
	}
	xmin = math.Min(xmin, 0)
	if ymax <= 0 {
		ymax = 1
	}
	xt := niceTicks(xmin, xmax, 6)
	yt := niceTicks(0, ymax, 5)
	xmax = math.Max(xmax, xt[len(xt)-1])
	ymax = math.Max(ymax, yt[len(yt)-1])
	pw, ph := float64(plotW-marginL-marginR), float64(plotH-marginT-marginB)
	px := func(x float64) float64 { return marginL + (x-xmin)/(xmax-xmin)*pw }
	py := func(y float64) float64 { return marginT + ph - y/ymax*ph }
	axes(&b, xLabel, yLabel, xt, yt, px, py)
	for i, s := range series {
		color := palette[i%len(palette)]
		if len(s.X) == 0 {
			continue
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="`, color)
		for j := range s.X {
			fmt.Fprintf(&b, "%.1f,%.1f ", px(s.X[j]), py(s.Y[j]))
		}
		b.WriteString(`"/>` + "\n")
		if len(s.X) <= 40 && !strings.HasSuffix(s.Name, ")") { // few points: mark them (not CDFs)
			for j := range s.X {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`, px(s.X[j]), py(s.Y[j]), color)
			}
			b.WriteString("\n")
		}
		// Legend at the bottom right, where CDFs leave room.
		ly := float64(plotH-marginB-10) - float64((len(series)-1-i)*legendStep)
		lx := float64(plotW - marginR - 210)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="3"/>`, lx, ly, lx+legendLine, ly, color)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="12" dominant-baseline="middle">%s</text>`+"\n", lx+legendLine+6, ly, html.EscapeString(s.Name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// BarPlot draws one horizontal bar per label.
func BarPlot(title, xLabel string, labels []string, values []float64) string {
	var b strings.Builder
	rowH := 20.0
	h := marginT + marginB + int(rowH)*max(len(labels), 1)
	left := 230.0
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n", plotW, h, plotW, h)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold" text-anchor="middle">%s</text>`+"\n", plotW/2, html.EscapeString(title))
	if len(labels) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" text-anchor="middle">none</text></svg>`+"\n", plotW/2, h/2)
		return b.String()
	}
	vmax := 0.0
	for _, v := range values {
		vmax = math.Max(vmax, v)
	}
	if vmax <= 0 {
		vmax = 1
	}
	ticks := niceTicks(0, vmax, 5)
	vmax = math.Max(vmax, ticks[len(ticks)-1])
	pw := float64(plotW-marginR) - left
	bottom := float64(h - marginB)
	for _, t := range ticks {
		x := left + t/vmax*pw
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, x, marginT, x, bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`+"\n", x, bottom+16, fmtTick(t))
	}
	for i, l := range labels {
		y := float64(marginT) + float64(i)*rowH
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, left, y+3, values[i]/vmax*pw, rowH-6, palette[0])
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, y+rowH/2, html.EscapeString(l))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="black"/>`, left, marginT, left, bottom)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%d" y2="%.1f" stroke="black"/>`, left, bottom, plotW-marginR, bottom)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="13" text-anchor="middle">%s</text>`+"\n", left+pw/2, h-12, html.EscapeString(xLabel))
	b.WriteString("</svg>\n")
	return b.String()
}

func header(b *strings.Builder, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(b, `<text x="%d" y="20" font-size="15" font-weight="bold" text-anchor="middle">%s</text>`+"\n", plotW/2, html.EscapeString(title))
}

func empty(b *strings.Builder) {
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="13" text-anchor="middle">no data</text></svg>`+"\n", plotW/2, plotH/2)
}

func axes(b *strings.Builder, xLabel, yLabel string, xt, yt []float64, px, py func(float64) float64) {
	bottom, top := py(0), float64(marginT)
	left, right := float64(marginL), float64(plotW-marginR)
	for _, t := range yt {
		y := py(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, left, y, right, y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, y, fmtTick(t))
	}
	for _, t := range xt {
		x := px(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, x, top, x, bottom)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`+"\n", x, bottom+16, fmtTick(t))
	}
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`, left, top, left, bottom)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`, left, bottom, right, bottom)
	fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="13" text-anchor="middle">%s</text>`+"\n", (left+right)/2, plotH-10, html.EscapeString(xLabel))
	fmt.Fprintf(b, `<text x="16" y="%.1f" font-size="13" text-anchor="middle" transform="rotate(-90 16 %.1f)">%s</text>`+"\n", (top+bottom)/2, (top+bottom)/2, html.EscapeString(yLabel))
}
