//! What every row chart shares: titles, the category axis (row labels and bands) and the value
//! axis description.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{AxisUnit, TickedAxis};
use super::style;
use super::PlotResult;

/// Title and subtitle at the top of a chart.
pub fn draw_titles<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, subtitle: &str) -> Result<()> {
    area.draw(&Text::new(title.to_string(), (20, 12), style::font(style::TITLE_SIZE))).plot()?;
    if !subtitle.is_empty() {
        area.draw(&Text::new(subtitle.to_string(), (20, 50), style::muted_font(style::SUBTITLE_SIZE))).plot()?;
    }
    Ok(())
}

/// The plotting area of a horizontal chart: a value axis and one row per category.
pub type RowChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<TickedAxis, TickedAxis>>;

/// Builds the row chart every horizontal chart uses: `labels` top to bottom on the category
/// axis, `x` with its `ticks` on the value axis.
pub fn row_chart<'a, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot_area: &'a DrawingArea<DB, Shift>,
    labels: &[&str],
    x: std::ops::Range<f64>,
    ticks: Vec<f64>,
) -> Result<RowChart<'a, DB>> {
    let rows = labels.len().max(1);
    let centers: Vec<f64> = (0..rows).map(|i| i as f64).collect();
    let label_width = widest_label(root, labels.iter().copied())? + 24;
    ChartBuilder::on(plot_area)
        .margin_left(12)
        .margin_right(28)
        .margin_bottom(6)
        .x_label_area_size(64)
        .y_label_area_size(label_width)
        .build_cartesian_2d(TickedAxis::new(x, ticks), TickedAxis::new(-0.5..rows as f64 - 0.5, centers))
        .plot()
}

/// The grid, the value axis (`x_desc`, ticks written by `x_tick`) and the row labels, given top
/// to bottom.
pub fn draw_row_mesh<DB: DrawingBackend>(
    chart: &mut RowChart<'_, DB>,
    labels: &[&str],
    x_desc: String,
    x_tick: &dyn Fn(&f64) -> String,
) -> Result<()> {
    let rows = labels.len().max(1);
    let row_label = |y: &f64| -> String {
        let row = y.round() as usize;
        labels.get(rows.saturating_sub(1 + row)).map_or(String::new(), |label| label.to_string())
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .bold_line_style(style::GRID)
        .axis_style(style::MUTED)
        .label_style(style::font(style::LABEL_SIZE))
        .axis_desc_style(style::font(style::AXIS_DESC_SIZE))
        .x_desc(x_desc)
        .x_label_formatter(x_tick)
        .y_label_formatter(&row_label)
        .draw()
        .plot()?;
    Ok(())
}

/// Light bands behind the rows marked `shaded` (row 0 is the top one).
pub fn draw_bands<DB: DrawingBackend>(
    chart: &mut RowChart<'_, DB>,
    shaded: impl ExactSizeIterator<Item = bool>,
    x_max: f64,
) -> Result<()> {
    let rows = shaded.len();
    let band = RGBColor(0xf2, 0xf2, 0xf2);
    for (index, on) in shaded.enumerate() {
        if on {
            let y = (rows - 1 - index) as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new([(0.0, y - 0.5), (x_max, y + 0.5)], band.filled())))
                .plot()?;
        }
    }
    Ok(())
}

pub(crate) fn axis_description(label: &str, unit: &AxisUnit) -> String {
    if unit.name.is_empty() {
        label.to_string()
    } else {
        format!("{label} ({})", unit.name)
    }
}

/// Pixel width of the widest category label.
pub(crate) fn widest_label<'a, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    labels: impl Iterator<Item = &'a str>,
) -> Result<u32> {
    let text_style = style::font(style::LABEL_SIZE);
    let mut widest = 40;
    for label in labels {
        widest = widest.max(root.estimate_text_size(label, &text_style).plot()?.0);
    }
    Ok(widest)
}
