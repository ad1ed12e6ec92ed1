//! `almanac query`: runs one query and prints its rows; also the one place
//! the CLI calls the query engine (used by `export` and the REPL).

use std::path::Path;

use almanac::query::{self, ExecOptions, Params, PreparedQuery, QueryError, Row};
use almanac::{Error, Store};
use clap::Args;
use serde_json::Value;

use super::error::{CliResult, Failure};
use super::output::{Format, Out, PrintRow, RowPrinter};

/// Arguments of `almanac query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Output format; default `table` when standard output is a terminal, else `jsonl`.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Bind parameter `$NAME` (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Print the query plan instead of running the query.
    #[arg(long)]
    explain: bool,
    /// The query (see the query language reference).
    query: String,
}

/// Runs `almanac query`.
pub fn run(db: &Path, args: &QueryArgs) -> CliResult {
    // A query that does not parse, or is given bad parameters, is refused
    // before the store is opened.
    let (prepared, params) = prepare_with(&args.query, &args.params)?;
    let store = super::open_store_for_reading(db)?;
    let mut out = Out::stdout();
    if args.explain {
        let plan = explain_prepared(&store, &prepared, &params)?;
        out.write_str(&plan)?;
    } else {
        let format = args.format.unwrap_or_else(Format::default_for_stdout);
        print_rows(&store, &prepared, &params, format, &mut out)?;
    }
    out.flush()
}

impl PrintRow for Row {
    fn json_text(&self, columns: &[String]) -> String {
        Row::json_text(self, columns)
    }

    fn cells(&self, columns: &[String]) -> Vec<Value> {
        Row::cells(self, columns)
    }
}

/// A bad query as the CLI reports it: the message, the 1-based line and
/// column, the query line and a caret under the column (exit 2).
fn bad_query(e: &QueryError, text: &str) -> Failure {
    let rendered = e.render(text);
    let rendered = rendered.strip_prefix("error: ").unwrap_or(&rendered);
    Failure::invalid(rendered)
}

/// A failed run: query errors rendered against the text, the rest as they are.
fn run_failure(e: Error, text: &str) -> Failure {
    match e {
        Error::Query(q) => bad_query(&q, text),
        other => Failure::from(other),
    }
}

fn prepare(text: &str) -> CliResult<PreparedQuery> {
    query::prepare(text).map_err(|e| bad_query(&e, text))
}

/// The query of `text` and its `NAME=VALUE` bindings, checked against each
/// other (a parameter left unbound, a value of the wrong type): everything
/// that can be refused without a store.
pub fn prepare_with(text: &str, bindings: &[String]) -> CliResult<(PreparedQuery, Params)> {
    let prepared = prepare(text)?;
    let params = bind(bindings)?;
    prepared
        .check_params(&params)
        .map_err(|e| bad_query(&e, text))?;
    Ok((prepared, params))
}

/// Streams the rows of a query that returns records to `write`, each the
/// record without any computed field (for `export`).
pub fn for_each_record(
    store: &Store,
    prepared: &PreparedQuery,
    params: &Params,
    mut write: impl FnMut(&almanac::StoredRecord) -> CliResult,
) -> CliResult {
    let text = prepared.text();
    let stream = prepared
        .stream(store, params, &options(store))
        .map_err(|e| run_failure(e, text))?;
    for row in stream {
        if let Row::Record { record, .. } = row.map_err(|e| run_failure(e, text))? {
            write(&record)?;
        }
    }
    Ok(())
}

/// Reads `NAME=VALUE` bindings. A name bound twice is refused: which of
/// the two values was meant cannot be known.
fn bind(bindings: &[String]) -> CliResult<Params> {
    let mut params = Params::new();
    for binding in bindings {
        let (name, _) =
            Params::parse_binding(binding).map_err(|e| Failure::invalid(e.to_string()))?;
        if params.get(&name).is_some() {
            return Err(Failure::invalid(format!(
                "parameter `${name}` is bound twice (`--param {binding}` after an earlier `--param {name}=...`)"
            )));
        }
        params
            .insert_binding(binding)
            .map_err(|e| Failure::invalid(e.to_string()))?;
    }
    Ok(params)
}

fn options(store: &Store) -> ExecOptions {
    ExecOptions {
        now: store.now(),
        use_indexes: true,
    }
}

fn print_rows(
    store: &Store,
    prepared: &PreparedQuery,
    params: &Params,
    format: Format,
    out: &mut Out,
) -> CliResult<usize> {
    let text = prepared.text();
    let stream = prepared
        .stream(store, params, &options(store))
        .map_err(|e| run_failure(e, text))?;
    let mut printer = RowPrinter::new(format, stream.columns().to_vec());
    printer.begin(out)?;
    for row in stream {
        let row = row.map_err(|e| run_failure(e, text))?;
        printer.row(out, &row)?;
    }
    printer.finish(out)
}

fn explain_prepared(store: &Store, prepared: &PreparedQuery, params: &Params) -> CliResult<String> {
    prepared
        .explain(store, params, &options(store))
        .map_err(|e| run_failure(e, prepared.text()))
}

/// Runs `text` with `NAME=VALUE` bindings and prints its rows in `format`.
/// Returns the number of rows printed.
pub fn execute(
    store: &Store,
    text: &str,
    bindings: &[String],
    format: Format,
    out: &mut Out,
) -> CliResult<usize> {
    let prepared = prepare(text)?;
    let params = bind(bindings)?;
    print_rows(store, &prepared, &params, format, out)
}

/// The plan of `text` with `NAME=VALUE` bindings, for `--explain` and `.explain`.
pub fn explain(store: &Store, text: &str, bindings: &[String]) -> CliResult<String> {
    let prepared = prepare(text)?;
    let params = bind(bindings)?;
    explain_prepared(store, &prepared, &params)
}
