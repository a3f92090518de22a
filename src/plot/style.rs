//! Colours and text sizes shared by every chart, chosen to read at a glance and to survive
//! colour-blindness (a colour-blind-safe palette: blue, orange, green, ...).

use plotters::prelude::*;

use super::FONT_FAMILY;

pub const TITLE_SIZE: f64 = 28.0;
pub const SUBTITLE_SIZE: f64 = 17.0;
pub const LABEL_SIZE: f64 = 17.0;
pub const AXIS_DESC_SIZE: f64 = 18.0;
pub const ANNOTATION_SIZE: f64 = 15.0;

pub const TEXT: RGBColor = RGBColor(0x22, 0x22, 0x22);
pub const MUTED: RGBColor = RGBColor(0x66, 0x66, 0x66);
pub const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);

/// Series colours, in order.
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0x1f, 0x77, 0xb4), // blue
    RGBColor(0xff, 0x7f, 0x0e), // orange
    RGBColor(0x2c, 0xa0, 0x2c), // green
    RGBColor(0x94, 0x67, 0xbd), // purple
    RGBColor(0x8c, 0x56, 0x4b), // brown
    RGBColor(0xd6, 0x27, 0x28), // red
    RGBColor(0x7f, 0x7f, 0x7f), // grey
];

/// A palette colour, made lighter for the n-th machine so machines stay apart side by side.
pub fn series_color(index: usize, shade: usize) -> RGBColor {
    let base = PALETTE[index % PALETTE.len()];
    let toward_white = (shade as f64 * 0.38).min(0.76);
    let mix = |c: u8| (c as f64 + (255.0 - c as f64) * toward_white).round() as u8;
    RGBColor(mix(base.0), mix(base.1), mix(base.2))
}

pub fn font(size: f64) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&TEXT)
}

pub fn muted_font(size: f64) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&MUTED)
}
