//! `almanac export [QUERY]`: the records a query matches (every record
//! without one, in (`produced_at`, `id`) order) as JSONL on standard output,
//! each in its canonical form: a query whose rows are not records (`select`,
//! `stats`) is refused, and fields computed by `extend` or `window` are left
//! out, so that `export | import` copies records.

use std::path::Path;

use almanac::query::ScanRequest;
use clap::Args;

use super::error::{CliResult, Context, Failure};
use super::output::Out;

/// Arguments of `almanac export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Bind parameter `$NAME` (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// The query whose rows to write; every record when absent.
    query: Option<String>,
}

/// Runs `almanac export`.
pub fn run(db: &Path, args: &ExportArgs) -> CliResult {
    let query = match &args.query {
        Some(text) => {
            let (prepared, params) = super::query::prepare_with(text, &args.params)?;
            if !prepared.returns_records() {
                return Err(Failure::invalid(format!(
                    "export writes records, and this query gives rows of columns ({}); \
                     `almanac query --format jsonl` writes those",
                    prepared.columns().join(", ")
                )));
            }
            Some((prepared, params))
        }
        None => None,
    };
    let store = super::open_store_for_reading(db)?;
    let mut out = Out::stdout();
    match &query {
        Some((prepared, params)) => {
            // A record as it is stored: fields computed by `extend` or
            // `window` are not part of it (and `import` would refuse them).
            super::query::for_each_record(&store, prepared, params, |record| {
                out.line(&record.to_json_string())
            })?;
        }
        None => {
            for record in store
                .scan(&ScanRequest::default())
                .context("cannot read the store")?
            {
                let record = record.context("cannot read the store")?;
                out.line(&record.to_json_string())?;
            }
        }
    }
    out.flush()
}
