//! A legend drawn in its own strip above the plot, so it never hides data.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style;
use super::PlotResult;

/// Coloured squares with their names, left to right, wrapping onto a second line if needed.
pub fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[(String, RGBColor)]) -> Result<()> {
    let (width, _) = area.dim_in_pixel();
    let text_style = style::font(style::LABEL_SIZE);
    let (mut x, mut y) = (20i32, 8i32);
    for (name, color) in entries {
        let (text_width, _) = area.estimate_text_size(name, &text_style).plot()?;
        let needed = 24 + text_width as i32 + 28;
        if x + needed > width as i32 && x > 20 {
            x = 20;
            y += 26;
        }
        area.draw(&Rectangle::new([(x, y + 2), (x + 16, y + 18)], color.filled())).plot()?;
        area.draw(&Text::new(name.clone(), (x + 22, y + 1), text_style.clone())).plot()?;
        x += needed;
    }
    Ok(())
}

/// Rows a legend needs for `entries` in `width` pixels (estimated from ~0.55 em per character).
pub fn rows_needed(entries: &[(String, RGBColor)], width: u32) -> u32 {
    let mut rows = 1;
    let mut x = 20.0;
    for (name, _) in entries {
        let needed = 24.0 + name.chars().count() as f64 * style::LABEL_SIZE * 0.56 + 28.0;
        if x + needed > width as f64 && x > 20.0 {
            rows += 1;
            x = 20.0;
        }
        x += needed;
    }
    rows
}
