package main

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// chart draws throughput by contender and value size (top) and end-to-end
// p99 latency by contender (bottom) into a PNG at path.
func (rep Report) chart(path string) error {
	var names []string
	seen := map[string]bool{}
	for _, r := range rep.Rows {
		if !seen[r.Contender] {
			seen[r.Contender] = true
			names = append(names, r.Contender)
		}
	}
	sizes := rep.Results.Config.Sizes

	tp := plot.New()
	tp.Title.Text = fmt.Sprintf("throughput, %d records, median of %d rounds (higher is better)",
		rep.Results.Config.Records, rep.Results.Config.Rounds)
	tp.Y.Label.Text = "thousand records/s"
	tp.Y.Min = 0
	var top float64
	w := vg.Points(float64(36) / float64(max(len(sizes), 1)))
	for i, size := range sizes {
		vals := make(plotter.Values, len(names))
		for j, n := range names {
			for _, r := range rep.Rows {
				if r.Contender == n && r.Size == size {
					vals[j] = r.RecPerS / 1000
					top = max(top, vals[j])
				}
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		bars.Color = palette[i%len(palette)]
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(float64(i)-float64(len(sizes)-1)/2)
		tp.Add(bars)
		tp.Legend.Add(fmt.Sprintf("%d B values", size), bars)
	}
	tp.Legend.Top = true
	tp.Y.Max = top * 1.2 // room for the legend above the bars
	tp.NominalX(names...)
	tp.X.Tick.Label.Rotation = 0.6
	tp.X.Tick.Label.XAlign = draw.XRight
	tp.X.Tick.Label.YAlign = draw.YCenter

	lp := plot.New()
	lp.Title.Text = fmt.Sprintf("end-to-end latency at %d records/s, 100 B (lower is better)", rep.Results.Config.Rate)
	lp.Y.Label.Text = "ms"
	lp.Y.Min = 0
	var latNames []string
	var p50, p99 plotter.Values
	var ltop float64
	for _, n := range names {
		for _, r := range rep.Rows {
			if r.Contender == n && r.LatP99 > 0 {
				latNames = append(latNames, n)
				p50, p99 = append(p50, r.LatP50), append(p99, r.LatP99)
				ltop = max(ltop, r.LatP99)
			}
		}
	}
	if len(latNames) == 0 { // no latency runs: an empty panel
		latNames, p50, p99 = []string{"none"}, plotter.Values{0}, plotter.Values{0}
	}
	for i, vs := range []plotter.Values{p50, p99} {
		bars, err := plotter.NewBarChart(vs, 18)
		if err != nil {
			return err
		}
		bars.Color = palette[i]
		bars.LineStyle.Width = 0
		bars.Offset = vg.Points(float64(18) * (float64(i) - 0.5))
		lp.Add(bars)
		lp.Legend.Add([]string{"p50", "p99"}[i], bars)
	}
	lp.Legend.Top = true
	lp.Y.Max = max(ltop*1.2, 1)
	lp.NominalX(latNames...)
	lp.X.Tick.Label.Rotation = 0.6
	lp.X.Tick.Label.XAlign = draw.XRight
	lp.X.Tick.Label.YAlign = draw.YCenter

	img := vgimg.New(12*vg.Inch, 10*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(8), PadBottom: vg.Points(8), PadX: vg.Points(8), PadY: vg.Points(16)}
	canvases := plot.Align([][]*plot.Plot{{tp}, {lp}}, tiles, dc)
	tp.Draw(canvases[0][0])
	lp.Draw(canvases[1][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
