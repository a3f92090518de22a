//! A report as a list of blocks, rendered to Markdown or to self-contained HTML, so both files
//! always say the same thing.

/// One piece of a report.
#[derive(Clone, Debug)]
pub enum Block {
    Heading(u8, String),
    Paragraph(String),
    Bullets(Vec<String>),
    Table(Table),
    /// A chart: file stem under charts/, its title, and the SVG for inlining in HTML.
    Chart {
        stem: String,
        title: String,
        svg: String,
    },
    /// Preformatted text (a command line).
    Code(String),
}

#[derive(Clone, Debug, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Columns after the first are right-aligned (numbers).
    pub numeric: bool,
}

pub fn to_markdown(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        match block {
            Block::Heading(level, text) => {
                out.push_str(&format!("{} {}\n\n", "#".repeat(usize::from(*level)), text));
            }
            Block::Paragraph(text) => out.push_str(&format!("{text}\n\n")),
            Block::Bullets(items) => {
                for item in items {
                    out.push_str(&format!("- {item}\n"));
                }
                out.push('\n');
            }
            Block::Table(table) => out.push_str(&markdown_table(table)),
            Block::Chart { stem, title, .. } => {
                out.push_str(&format!("![{title}](charts/{stem}.png)\n\n(also as [SVG](charts/{stem}.svg))\n\n"));
            }
            Block::Code(text) => out.push_str(&format!("```\n{text}\n```\n\n")),
        }
    }
    out
}

pub fn markdown_table(table: &Table) -> String {
    let escape = |cell: &str| cell.replace('|', "\\|").replace('\n', " ");
    let mut out = format!("| {} |\n", table.header.iter().map(|h| escape(h)).collect::<Vec<_>>().join(" | "));
    let aligns: Vec<&str> =
        (0..table.header.len()).map(|i| if i > 0 && table.numeric { "---:" } else { "---" }).collect();
    out.push_str(&format!("| {} |\n", aligns.join(" | ")));
    for row in &table.rows {
        out.push_str(&format!("| {} |\n", row.iter().map(|c| escape(c)).collect::<Vec<_>>().join(" | ")));
    }
    out.push('\n');
    out
}

/// A complete HTML page: inline CSS, charts as inline SVG; nothing is fetched from anywhere.
pub fn to_html(title: &str, blocks: &[Block]) -> String {
    let mut body = String::new();
    for block in blocks {
        match block {
            Block::Heading(level, text) => {
                let level = (*level).clamp(1, 6);
                body.push_str(&format!("<h{level}>{}</h{level}>\n", inline_markup(text)));
            }
            Block::Paragraph(text) => body.push_str(&format!("<p>{}</p>\n", inline_markup(text))),
            Block::Bullets(items) => {
                body.push_str("<ul>\n");
                for item in items {
                    body.push_str(&format!("<li>{}</li>\n", inline_markup(item)));
                }
                body.push_str("</ul>\n");
            }
            Block::Table(table) => body.push_str(&html_table(table)),
            Block::Chart { stem, title, svg } => {
                let svg = svg.find("<svg").map_or(svg.as_str(), |start| &svg[start..]);
                body.push_str(&format!(
                    "<figure id=\"{stem}\">\n{svg}\n<figcaption>{} — also <a href=\"charts/{stem}.png\">PNG</a>, \
                     <a href=\"charts/{stem}.svg\">SVG</a></figcaption>\n</figure>\n",
                    escape_html(title)
                ));
            }
            Block::Code(text) => body.push_str(&format!("<pre><code>{}</code></pre>\n", escape_html(text))),
        }
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n\
         <style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        escape_html(title)
    )
}

const STYLE: &str = "body { font-family: system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif; \
color: #222; background: #fff; margin: 0; line-height: 1.5; }
main { max-width: 1060px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.9rem; margin-bottom: 0.2rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.8rem 0 1.2rem; font-size: 0.92rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
figure { margin: 1.2rem 0; }
figure svg { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #666; font-size: 0.9rem; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; }
code { font-family: 'DejaVu Sans Mono', monospace; font-size: 0.9em; }
";

fn html_table(table: &Table) -> String {
    let mut out = String::from("<table>\n<thead><tr>");
    for cell in &table.header {
        out.push_str(&format!("<th>{}</th>", escape_html(cell)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for (index, cell) in row.iter().enumerate() {
            let class = if index > 0 && table.numeric { " class=\"num\"" } else { "" };
            out.push_str(&format!("<td{class}>{}</td>", inline_markup(cell)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The little Markdown the report's prose uses: `code` and **bold**.
fn inline_markup(text: &str) -> String {
    let escaped = escape_html(text);
    let mut out = String::new();
    for (index, part) in escaped.split('`').enumerate() {
        if index % 2 == 1 {
            out.push_str(&format!("<code>{part}</code>"));
        } else {
            for (bold_index, piece) in part.split("**").enumerate() {
                if bold_index % 2 == 1 {
                    out.push_str(&format!("<strong>{piece}</strong>"));
                } else {
                    out.push_str(piece);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_then_styled() {
        assert_eq!(inline_markup("a <b> `x<y` **z**"), "a &lt;b&gt; <code>x&lt;y</code> <strong>z</strong>");
    }
}
