//! `almanac query`: runs one query and prints its rows; also the one place
//! the CLI calls the query engine (used by `export` and the REPL).

use std::path::Path;

use almanac::{Error, MetadataRepository, Store};
use clap::Args;

use super::error::{CliResult, Failure};
use super::output::{Format, Out};

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
    let store = super::open_store(db)?;
    let mut out = Out::stdout();
    if args.explain {
        let plan = explain(&store, &args.query, &args.params)?;
        out.line(&plan)?;
    } else {
        let format = args.format.unwrap_or_else(Format::default_for_stdout);
        execute(&store, &args.query, &args.params, format, &mut out)?;
    }
    out.flush()
}

/// A failed query as the CLI reports it: a bad query shows its message, the
/// 1-based column, the query text and a caret (exit 2).
pub fn query_failure(e: Error, _text: &str) -> Failure {
    Failure::from(e)
}

/// Runs `text` with `NAME=VALUE` bindings and prints its rows in `format`.
/// Returns the number of rows printed.
pub fn execute(
    store: &Store,
    text: &str,
    _bindings: &[String],
    _format: Format,
    _out: &mut Out,
) -> CliResult<usize> {
    // Wired to the query engine when it lands (branch `query`).
    store
        .query(text, &almanac::query::Params::default())
        .map_err(|e| query_failure(e, text))?;
    Ok(0)
}

/// The plan of `text` with `NAME=VALUE` bindings, for `--explain` and `.explain`.
pub fn explain(store: &Store, text: &str, _bindings: &[String]) -> CliResult<String> {
    store
        .query(text, &almanac::query::Params::default())
        .map_err(|e| query_failure(e, text))?;
    Ok(String::new())
}
