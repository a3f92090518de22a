//! Lines over a count (instances started at once): one line per series, each point with a
//! whisker over the range its repetitions spanned. The count axis is logarithmic (1, 8, 32, ...
//! spread evenly), the value axis linear from zero.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{linear_ticks, tick_text, AxisUnit, Quantity, TickedAxis};
use super::frame::axis_description;
use super::{frame, legend, style, PlotResult};

#[derive(Clone, Debug)]
pub struct LinePoint {
    /// The count (x), at least 1.
    pub count: f64,
    /// Raw value (bytes, ns, ...).
    pub value: f64,
    /// The range of the repetitions (drawn as a whisker when wider than the point).
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Debug)]
pub struct LineSeries {
    pub name: String,
    /// Palette index.
    pub color: usize,
    pub points: Vec<LinePoint>,
}

#[derive(Clone, Debug)]
pub struct LineChart {
    pub title: String,
    pub subtitle: String,
    pub count_label: String,
    pub value_label: String,
    pub quantity: Quantity,
    pub series: Vec<LineSeries>,
}

pub fn draw<DB: DrawingBackend>(chart: &LineChart, root: &DrawingArea<DB, Shift>) -> Result<()> {
    let (width, _) = root.dim_in_pixel();
    let entries: Vec<(String, RGBColor)> =
        chart.series.iter().map(|s| (s.name.clone(), style::series_color(s.color, 0))).collect();
    let legend_height = 10 + 26 * legend::rows_needed(&entries, width);
    let (titles, rest) = root.split_vertically(86);
    let (legend_area, plot_area) = rest.split_vertically(legend_height);
    frame::draw_titles(&titles, &chart.title, &chart.subtitle)?;
    legend::draw(&legend_area, &entries)?;

    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let highest = points().map(|p| p.high.max(p.value)).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let lowest = points().map(|p| p.low.min(p.value)).filter(|v| v.is_finite()).fold(0.0, f64::min);
    let unit = AxisUnit::for_values(chart.quantity, highest.max(lowest.abs()));
    // Ticks over the whole span: a figure below zero (a difference within the noise) keeps its
    // place below the axis.
    let (high, low) = (highest / unit.divisor * 1.1, lowest / unit.divisor * 1.1);
    let (ticks, _) = linear_ticks(high - low, 7);
    let step = ticks.get(1).copied().filter(|s| *s > 0.0).unwrap_or(1.0);
    let (bottom, top) = ((low / step).floor() * step, ((high / step).ceil() * step).max(step));
    let y_ticks: Vec<f64> = (0..=((top - bottom) / step).round() as usize).map(|i| bottom + i as f64 * step).collect();

    let mut counts: Vec<f64> = points().map(|p| p.count.max(1.0)).collect();
    counts.sort_by(f64::total_cmp);
    counts.dedup();
    let logs: Vec<f64> = counts.iter().map(|c| c.log2()).collect();
    let (first, last) = (logs.first().copied().unwrap_or(0.0), logs.last().copied().unwrap_or(1.0));
    let margin = ((last - first) * 0.08).max(0.4);
    let x_range = (first - margin)..(last + margin);

    let mut cc = ChartBuilder::on(&plot_area)
        .margin_left(12)
        .margin_right(40)
        .margin_bottom(6)
        .x_label_area_size(64)
        .y_label_area_size(90)
        .build_cartesian_2d(TickedAxis::new(x_range, logs.clone()), TickedAxis::new(bottom..top, y_ticks))
        .plot()?;
    let count_text = |x: &f64| tick_text(x.exp2().round());
    cc.configure_mesh()
        .bold_line_style(style::GRID)
        .axis_style(style::MUTED)
        .label_style(style::font(style::LABEL_SIZE))
        .axis_desc_style(style::font(style::AXIS_DESC_SIZE))
        .x_desc(chart.count_label.clone())
        .y_desc(axis_description(&chart.value_label, &unit))
        .x_label_formatter(&count_text)
        .y_label_formatter(&|y| tick_text(*y))
        .draw()
        .plot()?;

    for series in &chart.series {
        let color = style::series_color(series.color, 0);
        let xy: Vec<(f64, f64)> =
            series.points.iter().map(|p| (p.count.max(1.0).log2(), p.value / unit.divisor)).collect();
        cc.draw_series(std::iter::once(PathElement::new(xy.clone(), color.stroke_width(3)))).plot()?;
        cc.draw_series(xy.iter().map(|&point| Circle::new(point, 6, color.filled()))).plot()?;
        for point in &series.points {
            let x = point.count.max(1.0).log2();
            let (low, high) = (point.low / unit.divisor, point.high / unit.divisor);
            if high > low {
                let whisker = color.stroke_width(2);
                let cap = 0.015 * (last - first + 2.0 * margin);
                for segment in
                    [[(x, low), (x, high)], [(x - cap, low), (x + cap, low)], [(x - cap, high), (x + cap, high)]]
                {
                    cc.draw_series(std::iter::once(PathElement::new(segment.to_vec(), whisker))).plot()?;
                }
            }
        }
        // The last point's value, written next to it.
        if let Some(point) = series.points.last() {
            let x = point.count.max(1.0).log2();
            cc.draw_series(std::iter::once(Text::new(
                unit.format(point.value),
                (x + 0.012 * (last - first + 2.0 * margin), point.value / unit.divisor),
                style::font(style::ANNOTATION_SIZE).pos(Pos::new(HPos::Left, VPos::Bottom)),
            )))
            .plot()?;
        }
    }
    Ok(())
}
