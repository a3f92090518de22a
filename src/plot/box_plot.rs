//! Horizontal box plots with every sample drawn: the box spans the middle half (Q1 to Q3),
//! the thick line is the median, whiskers reach the furthest samples within 1.5 IQR of the box
//! (Tukey), hollow rings mark samples beyond them, and small dots show each run.
//! Start-up times of runtimes differ by orders of magnitude, so the axis may be logarithmic.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{linear_ticks, log_ticks, significant, tick_text, AxisUnit, Quantity};
use super::frame::axis_description;
use super::{frame, style, PlotResult};

/// The five numbers of a Tukey box plot, computed by the statistics layer.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxShape {
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub whisker_low: f64,
    pub whisker_high: f64,
}

#[derive(Clone, Debug)]
pub struct BoxGroup {
    pub label: String,
    /// Palette colour index and machine shade.
    pub color: usize,
    pub shade: usize,
    pub shape: BoxShape,
    /// Every sample (raw units); those outside the whiskers are drawn as rings.
    pub samples: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct BoxPlotChart {
    pub title: String,
    pub subtitle: String,
    pub value_label: String,
    pub quantity: Quantity,
    /// Top to bottom.
    pub groups: Vec<BoxGroup>,
}

impl BoxPlotChart {
    /// Logarithmic when the largest sample is more than 20 times the smallest.
    pub fn wants_log_axis(&self) -> bool {
        let (min, max) = self.sample_range();
        min > 0.0 && max / min > 20.0
    }

    fn sample_range(&self) -> (f64, f64) {
        let values = self.groups.iter().flat_map(|g| g.samples.iter().copied()).filter(|v| v.is_finite());
        values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)))
    }
}

pub fn draw<DB: DrawingBackend>(chart: &BoxPlotChart, root: &DrawingArea<DB, Shift>) -> Result<()> {
    let (titles, plot_area) = root.split_vertically(86);
    frame::draw_titles(&titles, &chart.title, &chart.subtitle)?;

    let (min, max) = chart.sample_range();
    let max = if max > 0.0 { max } else { 1.0 };
    let min = if min.is_finite() && min > 0.0 { min } else { max / 10.0 };
    let unit = AxisUnit::for_values(chart.quantity, max);
    let log = chart.wants_log_axis();
    // Values are placed at to_axis(raw); on a log axis that is log10 of the display value.
    let to_axis = |raw: f64| {
        let shown = raw / unit.divisor;
        if log {
            shown.max(f64::MIN_POSITIVE).log10()
        } else {
            shown
        }
    };
    let (ticks, x_min, x_data_max) = if log {
        log_ticks(min / unit.divisor, max / unit.divisor)
    } else {
        let (ticks, top) = linear_ticks(max / unit.divisor, 6);
        (ticks, 0.0, top)
    };
    // Room on the right for the median annotation.
    let x_max = x_data_max + (x_data_max - x_min) * 0.32;
    let ticks: Vec<f64> = ticks.into_iter().filter(|t| *t <= x_data_max + 1e-9).collect();
    let rows = chart.groups.len().max(1);
    let labels: Vec<&str> = chart.groups.iter().map(|item| item.label.as_str()).collect();
    let mut cc = frame::row_chart(root, &plot_area, &labels, x_min..x_max, ticks)?;
    let tick_label =
        |x: &f64| if log { tick_text(significant(10f64.powf(*x)).parse().unwrap_or(0.0)) } else { tick_text(*x) };
    let description = axis_description(&chart.value_label, &unit);
    let description = if log { format!("{description}, logarithmic scale") } else { description };
    frame::draw_row_mesh(&mut cc, &labels, description, &tick_label)?;

    for (index, group) in chart.groups.iter().enumerate() {
        let y = (rows - 1 - index) as f64;
        let color = style::series_color(group.color, group.shade);
        let shape = &group.shape;
        let (q1, median, q3) = (to_axis(shape.q1), to_axis(shape.median), to_axis(shape.q3));
        let (low, high) = (to_axis(shape.whisker_low), to_axis(shape.whisker_high));
        let half = 0.26;
        let line = color.stroke_width(2);
        cc.draw_series(std::iter::once(Rectangle::new([(q1, y - half), (q3, y + half)], color.mix(0.25).filled())))
            .plot()?;
        cc.draw_series(std::iter::once(Rectangle::new([(q1, y - half), (q3, y + half)], line))).plot()?;
        for segment in [
            [(low, y), (q1, y)],
            [(q3, y), (high, y)],
            [(low, y - 0.12), (low, y + 0.12)],
            [(high, y - 0.12), (high, y + 0.12)],
        ] {
            cc.draw_series(std::iter::once(PathElement::new(segment.to_vec(), line))).plot()?;
        }
        cc.draw_series(std::iter::once(PathElement::new(
            vec![(median, y - half), (median, y + half)],
            style::TEXT.stroke_width(3),
        )))
        .plot()?;
        for (i, &raw) in group.samples.iter().enumerate() {
            // Deterministic jitter spreads equal values apart without randomness.
            let jitter = ((i * 37 % 11) as f64 / 10.0 - 0.5) * 0.34;
            let x = to_axis(raw);
            if raw < shape.whisker_low || raw > shape.whisker_high {
                cc.draw_series(std::iter::once(Circle::new((x, y), 6, style::TEXT.stroke_width(2)))).plot()?;
            } else {
                cc.draw_series(std::iter::once(Circle::new((x, y + jitter), 3, color.mix(0.75).filled()))).plot()?;
            }
        }
        let furthest = group.samples.iter().copied().fold(shape.whisker_high, f64::max);
        let text = format!("median {} · n = {}", unit.format(shape.median), group.samples.len());
        cc.draw_series(std::iter::once(Text::new(
            text,
            (to_axis(furthest) + (x_max - x_min) * 0.012, y),
            style::font(style::ANNOTATION_SIZE).pos(Pos::new(HPos::Left, VPos::Center)),
        )))
        .plot()?;
    }
    Ok(())
}
