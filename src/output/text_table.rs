//! A [`Table`] as aligned plain-text columns.

use crate::report::document::Table;

pub fn render(table: &Table, indent: &str) -> String {
    let columns = table.header.len();
    let width = |cell: &str| cell.chars().count();
    let mut widths: Vec<usize> = table.header.iter().map(|h| width(h)).collect();
    for row in &table.rows {
        for (index, cell) in row.iter().enumerate().take(columns) {
            widths[index] = widths[index].max(width(&plain(cell)));
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .take(columns)
            .map(|(index, cell)| {
                let cell = plain(cell);
                let pad = widths[index].saturating_sub(width(&cell));
                if index > 0 && table.numeric {
                    format!("{}{cell}", " ".repeat(pad))
                } else {
                    format!("{cell}{}", " ".repeat(pad))
                }
            })
            .collect();
        format!("{indent}{}", parts.join("   ").trim_end())
    };
    let mut out = vec![line(&table.header)];
    out.push(format!("{indent}{}", widths.iter().map(|w| "─".repeat(*w)).collect::<Vec<_>>().join("   ")));
    out.extend(table.rows.iter().map(|row| line(row)));
    out.join("\n")
}

/// Strips the report's inline Markdown (`code`, **bold**) for the terminal.
pub fn plain(text: &str) -> String {
    text.replace('`', "").replace("**", "")
}
