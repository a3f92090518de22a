//! Horizontal bars of ratios to a reference (1 = the bare process), each with an error bar of
//! ± one propagated standard deviation and its value written next to it.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{linear_ticks, tick_text, value_with_uncertainty};
use super::{frame, style, PlotResult};

#[derive(Clone, Debug)]
pub struct RatioBar {
    pub label: String,
    pub value: f64,
    pub uncertainty: Option<f64>,
    pub color: usize,
    pub shade: usize,
    /// Drawn on a light band, to group rows.
    pub shaded: bool,
}

#[derive(Clone, Debug)]
pub struct RatioBarChart {
    pub title: String,
    pub subtitle: String,
    pub value_label: String,
    /// Named at the dashed line drawn at 1.
    pub reference_label: String,
    /// Top to bottom.
    pub bars: Vec<RatioBar>,
}

pub fn draw<DB: DrawingBackend>(chart: &RatioBarChart, root: &DrawingArea<DB, Shift>) -> Result<()> {
    let (titles, plot_area) = root.split_vertically(86);
    frame::draw_titles(&titles, &chart.title, &chart.subtitle)?;

    let highest = chart
        .bars
        .iter()
        .map(|b| b.value + b.uncertainty.unwrap_or(0.0))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let (ticks, top) = linear_ticks(highest, 6);
    let x_max = (highest * 1.3).max(top);
    let ticks: Vec<f64> = ticks.into_iter().filter(|t| *t <= x_max).collect();
    let rows = chart.bars.len().max(1);
    let labels: Vec<&str> = chart.bars.iter().map(|item| item.label.as_str()).collect();
    let mut cc = frame::row_chart(root, &plot_area, &labels, 0.0..x_max, ticks)?;
    frame::draw_bands(&mut cc, chart.bars.iter().map(|b| b.shaded), x_max)?;
    frame::draw_row_mesh(&mut cc, &labels, chart.value_label.clone(), &|x| tick_text(*x))?;

    for (index, bar) in chart.bars.iter().enumerate() {
        if !bar.value.is_finite() {
            continue;
        }
        let y = (rows - 1 - index) as f64;
        let color = style::series_color(bar.color, bar.shade);
        cc.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y - 0.3), (bar.value.max(0.0), y + 0.3)],
            color.filled(),
        )))
        .plot()?;
        let mut end = bar.value;
        if let Some(u) = bar.uncertainty.filter(|u| *u > 0.0 && u.is_finite()) {
            let (low, high) = ((bar.value - u).max(0.0), bar.value + u);
            let whisker = style::TEXT.stroke_width(2);
            for segment in
                [[(low, y), (high, y)], [(low, y - 0.14), (low, y + 0.14)], [(high, y - 0.14), (high, y + 0.14)]]
            {
                cc.draw_series(std::iter::once(PathElement::new(segment.to_vec(), whisker))).plot()?;
            }
            end = high;
        }
        let text = format!("{}×", value_with_uncertainty(bar.value, bar.uncertainty));
        cc.draw_series(std::iter::once(Text::new(
            text,
            (end + x_max * 0.012, y),
            style::font(style::ANNOTATION_SIZE).pos(Pos::new(HPos::Left, VPos::Center)),
        )))
        .plot()?;
    }
    // The reference: 1 = as fast as the bare process.
    cc.draw_series(std::iter::once(plotters::element::DashedPathElement::new(
        vec![(1.0, -0.5), (1.0, rows as f64 - 0.5)],
        8,
        6,
        style::TEXT.stroke_width(2),
    )))
    .plot()?;
    cc.draw_series(std::iter::once(Text::new(
        chart.reference_label.clone(),
        (1.0 + x_max * 0.008, rows as f64 - 0.55),
        style::muted_font(style::ANNOTATION_SIZE).pos(Pos::new(HPos::Left, VPos::Top)),
    )))
    .plot()?;
    Ok(())
}
