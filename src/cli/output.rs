//! Writing to standard output: a locked, buffered writer whose errors are
//! propagated (a closed pipe ends the command quietly), and the four row
//! formats of `query`, `export` and the REPL.

use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};

use almanac::StoredRecord;
use comfy_table::{presets, ContentArrangement, Table};
use serde_json::{Map, Value};

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

/// One result row.
#[derive(Clone, Debug)]
pub enum OutRow {
    /// A record, with the fields `extend` or `window` computed for it.
    Record {
        /// The stored record.
        record: Box<StoredRecord>,
        /// Computed fields, in column order.
        computed: Vec<(String, Value)>,
    },
    /// A `select` or `stats` row: one value per column.
    Values(Vec<Value>),
}

impl OutRow {
    /// The row as the spec's JSON object: a record's canonical JSON plus its
    /// computed fields, or one key per column in column order.
    pub fn to_json(&self, columns: &[String]) -> Value {
        match self {
            OutRow::Record { record, computed } => {
                let mut value = record.to_json_value();
                if let Value::Object(map) = &mut value {
                    for (name, v) in computed {
                        map.insert(name.clone(), v.clone());
                    }
                }
                value
            }
            OutRow::Values(values) => {
                let mut map = Map::new();
                for (name, v) in columns.iter().zip(values) {
                    map.insert(name.clone(), v.clone());
                }
                Value::Object(map)
            }
        }
    }
}

/// What the rows of one result look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Record rows, with these computed fields.
    Records {
        /// Names of the computed fields, in order.
        computed: Vec<String>,
    },
    /// Value rows with these columns.
    Values {
        /// Column names, in order.
        columns: Vec<String>,
    },
}

/// Top-level fields of a record's canonical JSON, in order (CSV columns).
const RECORD_FIELDS: [&str; 10] = [
    "id",
    "kind",
    "target",
    "payload",
    "produced_at",
    "producer_id",
    "context",
    "version",
    "quality",
    "extras",
];

/// Widest cell a table shows before truncating, in characters.
const MAX_CELL_CHARS: usize = 60;

/// Prints rows in one format: streams `jsonl` and `csv`, buffers `table`.
pub struct RowPrinter {
    format: Format,
    shape: Shape,
    n_rows: usize,
    table_rows: Vec<Vec<String>>,
}

impl RowPrinter {
    /// A printer for rows of `shape`.
    pub fn new(format: Format, shape: Shape) -> Self {
        RowPrinter {
            format,
            shape,
            n_rows: 0,
            table_rows: Vec::new(),
        }
    }

    fn columns(&self) -> Vec<String> {
        match &self.shape {
            Shape::Values { columns } => columns.clone(),
            Shape::Records { computed } => Vec::from(RECORD_FIELDS.map(String::from))
                .into_iter()
                .chain(computed.iter().cloned())
                .collect(),
        }
    }

    fn table_header(&self) -> Vec<String> {
        match &self.shape {
            Shape::Values { columns } => columns.clone(),
            Shape::Records { computed } => ["id", "kind", "target", "produced_at", "producer_id"]
                .into_iter()
                .map(String::from)
                .chain(std::iter::once("payload".to_owned()))
                .chain(computed.iter().cloned())
                .collect(),
        }
    }

    /// Writes what comes before the rows (the CSV header, `[`).
    pub fn begin(&mut self, out: &mut Out) -> CliResult {
        match self.format {
            Format::Csv => {
                let header: Vec<String> = self.columns().iter().map(|c| csv_field(c)).collect();
                out.line(&header.join(","))
            }
            Format::Json => out.write_str("["),
            Format::Jsonl | Format::Table => Ok(()),
        }
    }

    /// Writes (or, for a table, keeps) one row.
    pub fn row(&mut self, out: &mut Out, row: &OutRow) -> CliResult {
        let columns = match (&self.shape, self.format) {
            (Shape::Values { columns }, Format::Json | Format::Jsonl) => columns.as_slice(),
            _ => &[],
        };
        match self.format {
            Format::Jsonl => out.line(&row.to_json(columns).to_string())?,
            Format::Json => {
                out.write_str(if self.n_rows == 0 { "\n" } else { ",\n" })?;
                out.write_str(&row.to_json(columns).to_string())?;
            }
            Format::Csv => {
                let cells: Vec<String> = self
                    .csv_values(row)
                    .iter()
                    .map(|v| csv_field(&plain_text(v)))
                    .collect();
                out.line(&cells.join(","))?;
            }
            Format::Table => {
                let cells = self.table_cells(row);
                self.table_rows.push(cells);
            }
        }
        self.n_rows += 1;
        Ok(())
    }

    fn csv_values(&self, row: &OutRow) -> Vec<Value> {
        match row {
            OutRow::Values(values) => values.clone(),
            OutRow::Record { .. } => {
                let json = row.to_json(&[]);
                self.columns()
                    .iter()
                    .map(|c| json.get(c).cloned().unwrap_or(Value::Null))
                    .collect()
            }
        }
    }

    fn table_cells(&self, row: &OutRow) -> Vec<String> {
        match row {
            OutRow::Values(values) => values.iter().map(table_cell).collect(),
            OutRow::Record { record, computed } => {
                let r = &record.record;
                let mut cells = vec![
                    record.id.to_string(),
                    r.kind.clone(),
                    truncate(&r.target_name()),
                    r.produced_at.to_rfc3339(),
                    truncate(&r.producer_id),
                    truncate(&Value::Object(r.payload.clone()).to_string()),
                ];
                cells.extend(computed.iter().map(|(_, v)| table_cell(v)));
                cells
            }
        }
    }

    /// Writes what comes after the rows (the table itself, `]`).
    pub fn finish(mut self, out: &mut Out) -> CliResult {
        match self.format {
            Format::Json => out.line(if self.n_rows == 0 { "]" } else { "\n]" }),
            Format::Jsonl | Format::Csv => Ok(()),
            Format::Table => {
                let mut table = Table::new();
                table
                    .load_preset(presets::UTF8_FULL_CONDENSED)
                    .set_header(self.table_header());
                if stdout_is_terminal() {
                    table.set_content_arrangement(ContentArrangement::Dynamic);
                }
                for row in std::mem::take(&mut self.table_rows) {
                    table.add_row(row);
                }
                out.line(&table.to_string())?;
                let plural = if self.n_rows == 1 { "" } else { "s" };
                out.line(&format!("{} row{plural}", self.n_rows))
            }
        }
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
