//! Horizontal stacked bars: one row per category, one coloured segment per part, the total
//! written at the end of each bar. Used for start-up phases, memory and CPU time.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{linear_ticks, tick_text, AxisUnit, Quantity};
use super::frame::axis_description;
use super::{frame, legend, style, PlotResult};

#[derive(Clone, Debug)]
pub struct StackedCategory {
    pub label: String,
    /// One raw value (ns, bytes, ...) per segment of the chart; missing parts are 0.
    pub values: Vec<f64>,
    /// Written after the bar (for example "total 12.3 ms"); None writes the sum.
    pub annotation: Option<String>,
    /// Drawn on a light band, to group rows (for example every other workload).
    pub shaded: bool,
}

#[derive(Clone, Debug)]
pub struct StackedBarChart {
    pub title: String,
    pub subtitle: String,
    /// The value axis, without unit ("time since the run started").
    pub value_label: String,
    pub quantity: Quantity,
    /// Segment names, in stacking order; segment i takes palette colour i.
    pub segments: Vec<String>,
    /// Top to bottom.
    pub categories: Vec<StackedCategory>,
}

pub fn draw<DB: DrawingBackend>(chart: &StackedBarChart, root: &DrawingArea<DB, Shift>) -> Result<()> {
    let (width, _) = root.dim_in_pixel();
    let entries: Vec<(String, RGBColor)> =
        chart.segments.iter().enumerate().map(|(i, name)| (name.clone(), style::series_color(i, 0))).collect();
    let legend_height = 10 + 26 * legend::rows_needed(&entries, width);
    let (titles, rest) = root.split_vertically(80);
    let (legend_area, plot_area) = rest.split_vertically(legend_height);
    frame::draw_titles(&titles, &chart.title, &chart.subtitle)?;
    legend::draw(&legend_area, &entries)?;

    let totals: Vec<f64> = chart.categories.iter().map(|c| c.values.iter().map(|v| v.max(0.0)).sum()).collect();
    let max_total = totals.iter().copied().fold(0.0, f64::max);
    let unit = AxisUnit::for_values(chart.quantity, max_total);
    let (ticks, _) = linear_ticks(max_total / unit.divisor, 6);
    // Room to the right of the longest bar for its annotation.
    let x_max = (max_total / unit.divisor * 1.28).max(ticks.last().copied().unwrap_or(1.0)).max(f64::MIN_POSITIVE);
    let ticks: Vec<f64> = ticks.into_iter().filter(|t| *t <= x_max).collect();
    let rows = chart.categories.len().max(1);
    let labels: Vec<&str> = chart.categories.iter().map(|item| item.label.as_str()).collect();
    let mut cc = frame::row_chart(root, &plot_area, &labels, 0.0..x_max, ticks)?;
    let shaded = chart.categories.iter().map(|c| c.shaded);
    frame::draw_bands(&mut cc, shaded, x_max)?;
    frame::draw_row_mesh(&mut cc, &labels, axis_description(&chart.value_label, &unit), &|x| tick_text(*x))?;

    for (index, category) in chart.categories.iter().enumerate() {
        let y = (rows - 1 - index) as f64;
        let mut start = 0.0;
        for (segment, value) in category.values.iter().enumerate() {
            let length = value.max(0.0) / unit.divisor;
            if length > 0.0 {
                let color = style::series_color(segment, 0);
                cc.draw_series(std::iter::once(Rectangle::new(
                    [(start, y - 0.3), (start + length, y + 0.3)],
                    color.filled(),
                )))
                .plot()?;
                start += length;
            }
        }
        let text = category.annotation.clone().unwrap_or_else(|| unit.format(totals[index]));
        let anchor = Pos::new(HPos::Left, VPos::Center);
        cc.draw_series(std::iter::once(Text::new(
            text,
            (start + x_max * 0.01, y),
            style::font(style::ANNOTATION_SIZE).pos(anchor),
        )))
        .plot()?;
    }
    Ok(())
}
