//! `almanac export [QUERY]`: the records a query matches (every record
//! without one, in (`produced_at`, `id`) order) as JSONL on standard output.

use std::path::Path;

use almanac::query::ScanRequest;
use clap::Args;

use super::error::{CliResult, Context};
use super::output::{Format, Out};

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
    let store = super::open_store(db)?;
    let mut out = Out::stdout();
    match &args.query {
        Some(text) => {
            super::query::execute(&store, text, &args.params, Format::Jsonl, &mut out)?;
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
