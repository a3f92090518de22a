//! Terminal output: what `cvm bench` and `cvm compare` print on stdout. Formatting only; the
//! numbers come from the statistics layer through the report model.

pub mod bench_summary;
pub mod compare_summary;
pub mod text_table;

/// Writes to stdout; a closed pipe (`cvm compare | head`) ends the output quietly instead of
/// panicking like `print!` does.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}
