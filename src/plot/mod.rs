//! Charts with plotters, drawn from plain numbers (no run records here): horizontal stacked
//! bars (start-up phases, memory, CPU time), box plots with every sample shown (start-up
//! distributions), ratio bars with error bars (throughput relative to the bare process), and
//! lines over an instance count (density).
//!
//! Text uses the DejaVu Sans font embedded in the binary (assets/fonts), registered with
//! plotters' `ab_glyph` backend, so no fontconfig or freetype is needed on the host.

pub mod axis;
pub mod box_plot;
pub mod frame;
pub mod legend;
pub mod lines;
pub mod ratio_bars;
pub mod stacked_bars;
pub mod style;

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

pub use axis::Quantity;
pub use box_plot::{BoxGroup, BoxPlotChart};
pub use lines::{LineChart, LinePoint, LineSeries};
pub use ratio_bars::{RatioBar, RatioBarChart};
pub use stacked_bars::{StackedBarChart, StackedCategory};

/// DejaVu Sans (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
pub static FONT_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
pub const FONT_FAMILY: &str = "sans-serif";

/// Width of every chart, in pixels.
pub const CHART_WIDTH: u32 = 1000;

/// Registers the embedded font with plotters (once per process).
pub fn register_font() -> Result<()> {
    static REGISTER: Once = Once::new();
    let mut outcome = Ok(());
    REGISTER.call_once(|| {
        outcome = plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_TTF)
            .map_err(|_| anyhow!("the embedded chart font could not be loaded"));
    });
    outcome
}

/// One chart, ready to be drawn on any backend.
#[derive(Clone, Debug)]
pub enum Chart {
    Stacked(StackedBarChart),
    Boxes(BoxPlotChart),
    Ratios(RatioBarChart),
    Lines(LineChart),
}

impl Chart {
    /// Width and height in pixels (taller with more rows).
    pub fn size(&self) -> (u32, u32) {
        let rows = match self {
            Chart::Stacked(c) => c.categories.len(),
            Chart::Boxes(c) => c.groups.len(),
            Chart::Ratios(c) => c.bars.len(),
            Chart::Lines(_) => return (CHART_WIDTH, 600),
        };
        (CHART_WIDTH, chart_height(rows))
    }

    pub fn title(&self) -> &str {
        match self {
            Chart::Stacked(c) => &c.title,
            Chart::Boxes(c) => &c.title,
            Chart::Ratios(c) => &c.title,
            Chart::Lines(c) => &c.title,
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).plot()?;
        match self {
            Chart::Stacked(c) => stacked_bars::draw(c, root),
            Chart::Boxes(c) => box_plot::draw(c, root),
            Chart::Ratios(c) => ratio_bars::draw(c, root),
            Chart::Lines(c) => lines::draw(c, root),
        }?;
        root.present().plot()
    }

    /// The chart as an SVG document (text left to the viewer's sans-serif font).
    pub fn to_svg(&self) -> Result<String> {
        register_font()?;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size()).into_drawing_area();
            self.draw(&root)?;
        }
        Ok(svg)
    }

    /// Renders the chart as a PNG file.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        register_font()?;
        let root = BitMapBackend::new(path, self.size()).into_drawing_area();
        self.draw(&root).with_context(|| format!("drawing {}", path.display()))
    }
}

/// Title, legend and axis take about 190 px; each row gets 52 px, within sensible bounds.
pub fn chart_height(rows: usize) -> u32 {
    (190 + 52 * rows as u32).clamp(380, 1100)
}

/// Turns plotters' backend-specific errors into one message.
pub(crate) trait PlotResult<T> {
    fn plot(self) -> Result<T>;
}

impl<T, E: std::fmt::Debug> PlotResult<T> for std::result::Result<T, E> {
    fn plot(self) -> Result<T> {
        self.map_err(|e| anyhow!("drawing a chart failed: {e:?}"))
    }
}
