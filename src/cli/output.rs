//! Writing to standard output: a locked, buffered writer whose errors are
//! propagated (a closed pipe ends the command quietly), and the four row
//! formats of `query`, `export` and the REPL.

use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};

use comfy_table::{presets, ContentArrangement, Table};
use serde_json::Value;

use super::error::{CliResult, Failure};

/// Standard output, locked and buffered; every write reports failures.
pub struct Out {
    inner: BufWriter<StdoutLock<'static>>,
}

impl Out {
    /// Locks standard output for the rest of the command.
    pub fn stdout() -> Self {
        Out {
            inner: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        }
    }

    /// Writes `text` as is.
    pub fn write_str(&mut self, text: &str) -> CliResult {
        self.inner
            .write_all(text.as_bytes())
            .map_err(Failure::stdout)
    }

    /// Writes `text` and a newline.
    pub fn line(&mut self, text: &str) -> CliResult {
        self.write_str(text)?;
        self.write_str("\n")
    }

    /// Pushes buffered output to the reader.
    pub fn flush(&mut self) -> CliResult {
        self.inner.flush().map_err(Failure::stdout)
    }
}

/// True when standard output is a terminal (people read it).
pub fn stdout_is_terminal() -> bool {
    io::stdout().is_terminal()
}

/// How result rows are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table for people; wide cells are truncated.
    Table,
    /// All rows as one JSON array.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// A header line, then one line per row; nested values as compact JSON.
    Csv,
}

impl Format {
    /// `table` when standard output is a terminal, else `jsonl`.
    pub fn default_for_stdout() -> Self {
        if stdout_is_terminal() {
            Format::Table
        } else {
            Format::Jsonl
        }
    }

    /// The format's name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }

    /// Reads a format name (for the REPL's `.format`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "table" => Some(Format::Table),
            "json" => Some(Format::Json),
            "jsonl" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// A result row the printer can show: the query engine's `Row` implements it.
pub trait PrintRow {
    /// The row as the spec's JSON object, as text (a record's canonical JSON
    /// plus its computed fields, or one key per column in column order).
    fn json_text(&self, columns: &[String]) -> String;
    /// One value per column, for tables and CSV.
    fn cells(&self, columns: &[String]) -> Vec<Value>;
}

/// Widest cell a table shows before truncating, in characters.
const MAX_CELL_CHARS: usize = 60;

/// Prints rows in one format: streams `jsonl`, `json` and `csv`, buffers `table`.
pub struct RowPrinter {
    format: Format,
    columns: Vec<String>,
    n_rows: usize,
    table_rows: Vec<Vec<String>>,
}

impl RowPrinter {
    /// A printer for rows with these columns.
    pub fn new(format: Format, columns: Vec<String>) -> Self {
        RowPrinter {
            format,
            columns,
            n_rows: 0,
            table_rows: Vec::new(),
        }
    }

    /// Writes what comes before the rows (the CSV header, `[`).
    pub fn begin(&mut self, out: &mut Out) -> CliResult {
        match self.format {
            Format::Csv => {
                let header: Vec<String> = self.columns.iter().map(|c| csv_field(c)).collect();
                out.line(&header.join(","))
            }
            Format::Json => out.write_str("["),
            Format::Jsonl | Format::Table => Ok(()),
        }
    }

    /// Writes (or, for a table, keeps) one row.
    pub fn row(&mut self, out: &mut Out, row: &dyn PrintRow) -> CliResult {
        match self.format {
            Format::Jsonl => out.line(&row.json_text(&self.columns))?,
            Format::Json => {
                out.write_str(if self.n_rows == 0 { "\n" } else { ",\n" })?;
                out.write_str(&row.json_text(&self.columns))?;
            }
            Format::Csv => {
                let cells: Vec<String> = row
                    .cells(&self.columns)
                    .iter()
                    .map(|v| csv_field(&plain_text(v)))
                    .collect();
                out.line(&cells.join(","))?;
            }
            Format::Table => {
                let cells = row.cells(&self.columns).iter().map(table_cell).collect();
                self.table_rows.push(cells);
            }
        }
        self.n_rows += 1;
        Ok(())
    }

    /// Writes what comes after the rows (the table itself, `]`); returns
    /// the number of rows.
    pub fn finish(mut self, out: &mut Out) -> CliResult<usize> {
        match self.format {
            Format::Json => out.line(if self.n_rows == 0 { "]" } else { "\n]" })?,
            Format::Jsonl | Format::Csv => {}
            Format::Table => {
                let mut table = Table::new();
                table
                    .load_preset(presets::UTF8_FULL_CONDENSED)
                    .set_header(self.columns.clone());
                // Fitted to the terminal's width, unless it reports none
                // worth fitting to (a pseudo-terminal of size 0x0 would
                // squeeze every column to one character).
                if stdout_is_terminal() && table.width().is_some_and(|w| w >= 20) {
                    table.set_content_arrangement(ContentArrangement::Dynamic);
                }
                for row in std::mem::take(&mut self.table_rows) {
                    table.add_row(row);
                }
                out.line(&table.to_string())?;
                let plural = if self.n_rows == 1 { "" } else { "s" };
                out.line(&format!("{} row{plural}", self.n_rows))?;
            }
        }
        Ok(self.n_rows)
    }
}

/// A value as a table cell: strings bare, the rest as compact JSON, truncated.
fn table_cell(value: &Value) -> String {
    truncate(&plain_text(value))
}

/// A value as text: strings bare, null empty, the rest as compact JSON.
fn plain_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Cuts `text` to [`MAX_CELL_CHARS`] characters, marking the cut with `…`.
fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_CELL_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A CSV field, quoted when it holds a comma, quote, newline or edge spaces.
pub fn csv_field(text: &str) -> String {
    let needs_quotes =
        text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_csv(input: &str, expected: &str) {
        assert_eq!(csv_field(input), expected);
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        check_csv("plain", "plain");
        check_csv("a,b", "\"a,b\"");
        check_csv("say \"hi\"", "\"say \"\"hi\"\"\"");
        check_csv("two\nlines", "\"two\nlines\"");
        check_csv(" pad", "\" pad\"");
        check_csv("", "");
    }

    #[test]
    fn truncation_keeps_short_text_and_marks_cuts() {
        assert_eq!(truncate("short"), "short");
        let long = "x".repeat(100);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_CELL_CHARS);
        assert!(cut.ends_with('…'));
    }
}
