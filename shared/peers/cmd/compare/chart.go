package main

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// panel is one bar chart of the figure: a median per server.
type panel struct {
	title string
	value func(row) float64
}

var panels = []panel{
	{title: "msgs/s (higher is better)", value: func(r row) float64 { return r.msgs }},
	{title: "p99 µs (lower is better)", value: func(r row) float64 { return float64(r.p99.Nanoseconds()) / 1e3 }},
	{title: "CPU µs/msg (lower is better)", value: func(r row) float64 { return float64(r.cpu.Nanoseconds()) / 1e3 }},
}

var (
	barColor  = color.RGBA{R: 0x4c, G: 0x72, B: 0xb0, A: 0xff}
	baseColor = color.RGBA{R: 0x99, G: 0x99, B: 0x99, A: 0xff}
)

// chart writes the table's three medians as three bar charts side by side,
// the baseline's bar in grey, to an SVG file.
func chart(path string, c conditions, rows []row) error {
	if len(rows) == 0 {
		return fmt.Errorf("chart %s: no server has a round to plot", path)
	}
	labels := make([]string, len(rows))
	for i, r := range rows {
		labels[i] = r.label
	}
	const w, h = 30 * vg.Centimeter, 11 * vg.Centimeter
	canvas := vgsvg.New(w, h)
	dc := draw.New(canvas)
	top := draw.Crop(dc, 0, 0, 0, -1.2*vg.Centimeter)
	plots := make([]*plot.Plot, len(panels))
	for i, pn := range panels {
		p, err := barPlot(pn, rows, labels)
		if err != nil {
			return err
		}
		plots[i] = p
	}
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Centimeter, PadLeft: 0.3 * vg.Centimeter, PadRight: vg.Centimeter}
	cells := plot.Align([][]*plot.Plot{plots}, tiles, top)
	for i, p := range plots {
		p.Draw(cells[0][i])
	}
	title := fmt.Sprintf("echo, %d conns, %d B, %s, %d rounds of %v, %s; medians",
		c.load.Conns, c.load.Size, shape(c.load.Depth), c.rounds, c.load.Duration, pinning(c))
	style := draw.TextStyle{Color: color.Black, Font: plot.DefaultFont, XAlign: draw.XCenter, YAlign: draw.YTop}
	style.Font.Size = vg.Points(12)
	style.Handler = plot.DefaultTextHandler
	dc.FillText(style, vg.Point{X: w / 2, Y: h - 0.3*vg.Centimeter}, title)

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func barPlot(pn panel, rows []row, labels []string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = pn.title
	p.Y.Min = 0
	for _, r := range rows {
		p.Y.Max = max(p.Y.Max, 1.1*pn.value(r)) // headroom above the tallest bar
	}
	for i, r := range rows {
		// One BarChart per server, so the baseline can have its own colour;
		// each holds a single bar at its own x.
		vals := make(plotter.Values, len(rows))
		vals[i] = pn.value(r)
		bars, err := plotter.NewBarChart(vals, vg.Points(22))
		if err != nil {
			return nil, err
		}
		bars.LineStyle.Width = 0
		bars.Color = barColor
		if r.baseline {
			bars.Color = baseColor
		}
		p.Add(bars)
	}
	p.NominalX(labels...)
	p.X.Tick.Label.Rotation = 0.5
	p.X.Tick.Label.XAlign = draw.XRight
	return p, nil
}

func pinning(c conditions) string {
	if c.pinned {
		return fmt.Sprintf("pinned (server CPU %d, load CPU %d)", c.cpus[0], c.cpus[1])
	}
	return "not pinned"
}
